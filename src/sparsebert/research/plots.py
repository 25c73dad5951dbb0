"""Plots of experiment grids: dev score along each run, and score against run length or sparsity."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def eval_trajectory(log_path: Path, metric: str) -> list[tuple[int, float, float]]:
    """(step, sparsity, score) of each evaluation in a prune log."""
    points = []
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if "eval" in record:
            points.append((record["step"], record.get("sparsity", 0.0), record["eval"][metric]))
    return points


def reference_lines(ax, task: str, teachers: dict[str, float], majority: dict[str, float]) -> None:
    """The teacher's and the majority class's scores on `task`, as horizontal lines."""
    if task in teachers:
        ax.axhline(teachers[task], color="black", ls="--", lw=1, label="teacher")
    if task in majority:
        ax.axhline(majority[task], color="red", ls=":", lw=1, label="majority class")


def plot_trajectories(runs: dict[tuple[str, str], tuple[list, str]], teachers: dict[str, float],
                      majority: dict[str, float], path: Path) -> None:
    """runs: (task, label) -> ((step, sparsity, score) of each evaluation, metric); teachers and majority:
    task -> score, drawn as lines.

    Each point is labelled with the sparsity reached at that evaluation."""
    tasks = sorted({task for task, _ in runs})
    # a grid has many runs: the legend goes below each plot, where it hides no point
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 5 + 0.12 * len(runs)), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = next(m for (run_task, _), (_, m) in runs.items() if run_task == task)  # one per task
        for (run_task, label), (points, _) in sorted(runs.items()):
            if run_task != task:
                continue
            ax.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=label)
            for step, sparsity, score in points:
                ax.annotate(f"{sparsity:.0%}", (step, score), fontsize=6, textcoords="offset points", xytext=(3, 3))
        reference_lines(ax, task, teachers, majority)
        ax.set_xlabel("optimiser step (labels: sparsity reached)")
        ax.set_ylabel(f"dev {metric}")
        ax.set_title(task)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(records: list[dict], axis: str, metrics: dict[str, str], teachers: dict[str, float],
                majority: dict[str, float], path: Path) -> None:
    """Score against one setting of the jobs (`axis`: "steps", what a budget buys, or "sparsity", how the
    score degrades): one line per group of runs equal in everything else, the mean of `shown` (the value of
    the task's metric in `metrics`) over seeds with the standard deviation as error bar. Draws nothing, and removes an old plot, when no group has
    two values of `axis`."""
    other = "sparsity" if axis == "steps" else "steps"
    groups: dict[tuple, dict[float, list[float]]] = {}
    for r in records:
        groups.setdefault((r["task"], r["variant"], r[other]), {}).setdefault(r[axis], []).append(r["shown"])
    groups = {key: by_value for key, by_value in groups.items() if len(by_value) > 1}
    if not groups:
        path.unlink(missing_ok=True)
        return
    tasks = sorted({task for task, _, _ in groups})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for (group_task, variant, fixed), by_value in sorted(groups.items()):
            if group_task != task:
                continue
            xs = sorted(by_value)
            means = [statistics.mean(by_value[x]) for x in xs]
            errors = [statistics.stdev(by_value[x]) if len(by_value[x]) > 1 else 0.0 for x in xs]
            label = f"{variant}, {fixed:.0%} sparse" if other == "sparsity" else f"{variant}, {fixed} steps"
            ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=label)
        reference_lines(ax, task, teachers, majority)
        if axis == "steps":
            ax.set_xscale("log", base=2)
        ax.set_xlabel("optimiser steps in the run" if axis == "steps" else "sparsity of the pruned matrices")
        ax.set_ylabel(f"dev {metrics[task]} of the model each run ends with")
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
