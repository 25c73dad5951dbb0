"""Plots of experiment grids: dev score along each run, and score against the run's length."""

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


def plot_trajectories(runs: dict[str, tuple[Path, str]], teachers: dict[str, float], majority: dict[str, float],
                      path: Path) -> None:
    """runs: label -> (log.jsonl, metric); teachers and majority: task -> score, drawn as lines.

    Each point is labelled with the sparsity reached at that evaluation."""
    tasks = sorted({label.split(" ")[0] for label in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for label, (log, metric) in sorted(runs.items()):
            if label.split(" ")[0] != task:
                continue
            points = eval_trajectory(log, metric)
            ax.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=label)
            for step, sparsity, score in points:
                ax.annotate(f"{sparsity:.0%}", (step, score), fontsize=6, textcoords="offset points", xytext=(3, 3))
        if task in teachers:
            ax.axhline(teachers[task], color="black", ls="--", lw=1, label="teacher")
        if task in majority:
            ax.axhline(majority[task], color="red", ls=":", lw=1, label="majority class")
        ax.set_xlabel("optimiser step (labels: sparsity reached)")
        ax.set_ylabel(f"dev {metric}")
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_budget(records: list[dict], teachers: dict[str, float], majority: dict[str, float], path: Path) -> None:
    """What a budget buys: each (task, variant, sparsity) run at several lengths, its score (`shown`, mean
    over seeds with the standard deviation as error bar) against the number of optimiser steps.
    Draws nothing, and removes an old plot, when no such group exists."""
    groups: dict[tuple, dict[int, list[float]]] = {}
    for r in records:
        groups.setdefault((r["task"], r["variant"], r["sparsity"]), {}).setdefault(r["steps"], []).append(r["shown"])
    groups = {key: by_steps for key, by_steps in groups.items() if len(by_steps) > 1}
    if not groups:
        path.unlink(missing_ok=True)
        return
    tasks = sorted({task for task, _, _ in groups})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for (group_task, variant, sparsity), by_steps in sorted(groups.items()):
            if group_task != task:
                continue
            steps = sorted(by_steps)
            means = [statistics.mean(by_steps[s]) for s in steps]
            errors = [statistics.stdev(by_steps[s]) if len(by_steps[s]) > 1 else 0.0 for s in steps]
            ax.errorbar(steps, means, yerr=errors, marker="o", capsize=3, label=f"{variant} {sparsity:.0%}")
        if task in teachers:
            ax.axhline(teachers[task], color="black", ls="--", lw=1, label="teacher")
        if task in majority:
            ax.axhline(majority[task], color="red", ls=":", lw=1, label="majority class")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("optimiser steps in the run")
        ax.set_ylabel("dev score of the saved model")
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
