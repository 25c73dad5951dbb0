"""Paired comparisons: which runs of a grid form a pair (two arms of one task, sparsity, step count, pattern and
seed, taught by one teacher), which arm must run again so that a pair exists under the teacher a grid has now,
and paired.md, the decision rule applied per task and across tasks."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from .stats import paired_comparison, pooled_comparison


def format_p(p: float) -> str:
    """A p value as a table shows it: three decimals, or below 0.001 its first two significant digits (13 pairs of
    one sign give 0.00024, not 0.000), never in exponent notation."""
    return f"{p:.3f}" if p >= 0.001 else np.format_float_positional(p, precision=2, unique=False, fractional=False)


def arms(records: list[dict], variant: str, sparsity: float) -> dict[tuple, list[dict]]:
    """A variant's runs at a sparsity by what a pair matches on; a seed may have runs of several teachers."""
    runs: dict[tuple, list[dict]] = {}
    for r in records:
        if r["variant"] == variant and r["sparsity"] == sparsity:
            runs.setdefault((r["task"], r["steps"], r.get("pattern", "unstructured"), r["seed"]), []).append(r)
    return runs


def pair_of(ours: list[dict], theirs: list[dict]) -> tuple[dict, dict] | None:
    """The first two runs, in record order (the earliest committed first), that one teacher taught; an arm
    without a teacher (no-teacher) pairs with any. None when every run of one arm had another teacher."""
    for mine in ours:
        for base in theirs:
            if None in (mine.get("teacher_sha256"), base.get("teacher_sha256")) \
                    or mine["teacher_sha256"] == base["teacher_sha256"]:
                return mine, base
    return None


def partners_to_run_again(config: dict, jobs: list[dict], job: dict, teachers_of) -> list[dict]:
    """The other arms of `job`'s pairs that have runs, none of them taught by a teacher of `job`'s runs: a grid
    continued where its teacher retrains differently runs them again under the teacher it has now, or the seed
    would never pair. `teachers_of(job)` is the set of fingerprints of a job's runs (None: taught by none)."""
    others = {p["baseline"] if p["method"] == job["variant"] else p["method"] for p in config.get("paired", [])
              if job["variant"] in (p["method"], p["baseline"]) and p["sparsity"] == job["sparsity"]}
    mine = teachers_of(job) if others else set()
    if not mine or None in mine:
        return []
    same_pair = lambda j: (j["variant"] in others and j["teacher"] == job["teacher"] and j["seed"] == job["seed"]
                           and j["sparsity"] == job["sparsity"] and j["steps"] == job["steps"])
    return [j for j in jobs if same_pair(j) and teachers_of(j) and None not in teachers_of(j)
            and not mine & teachers_of(j)]


def retention(score: float, teacher: float | None, constant: float | None) -> str:
    """A score as a share of the teacher's, and as a share of the teacher's margin over the constant answer
    (on MRPC always answering 'equivalent' scores F1 0.81: 95% of a 0.86 teacher's F1 is below it)."""
    if not teacher or teacher <= 0:
        return "–"
    margin = f"{(score - constant) / (teacher - constant):.0%}" if constant is not None and teacher > constant else "–"
    return f"{score / teacher:.1%} / {margin}"


def write_paired(path: Path, records: list[dict], tasks: list[str], pairs: list[dict], label: str,
                 teachers: dict[str, float] | None = None, constant: dict[str, float] | None = None,
                 teacher_by_fingerprint: dict[str, float] | None = None) -> None:
    """`method` minus `baseline` at `sparsity`, by the final models, pair by pair: runs of one task, sparsity,
    step count, pattern and seed (the same seed: the same data order, dropout draws and head), taught by one
    teacher (runs of one seed whose teachers' fingerprints differ are listed, not paired). The decision
    rule is stats.py's: an exact sign-flip test, p < 0.05, at least stats.MIN_PAIRS pairs; the interval is the
    paired t interval of the mean. Each arm's score is also a share of the teacher's (its own teacher's where the
    records name it by fingerprint in `teacher_by_fingerprint`, else the task's in `teachers`), and of its margin
    over the constant answer. Below the table, the same test across tasks."""
    teachers, constant, by_fingerprint = teachers or {}, constant or {}, teacher_by_fingerprint or {}
    lines = [f"| task | {label} | baseline | sparsity | steps | pattern | pairs (seeds) | {label} mean | baseline mean "
             f"| difference | 95% t interval | sign-flip p | verdict | {label} kept (of teacher / of margin) "
             "| baseline kept |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pooled_lines, unpaired = [], []
    for pair in pairs:
        runs = lambda variant: arms(records, variant, pair["sparsity"])
        candidates = runs(pair["method"]), runs(pair["baseline"])
        both = candidates[0].keys() & candidates[1].keys()
        chosen = {k: pair_of(candidates[0][k], candidates[1][k]) for k in both}
        matched = {k for k in both if chosen[k]}
        ours, theirs = ({k: chosen[k][i] for k in matched} for i in (0, 1))
        unpaired += [f"- {k[0]} seed {k[3]}, {k[1]} steps, {k[2]}: {pair['method']} and {pair['baseline']} were taught "
                     f"by different teachers" for k in sorted(both - matched)]
        for steps, pattern in sorted({(k[1], k[2]) for k in matched}):
            differences = {}
            for task in tasks:
                keys = sorted(k for k in matched if k[:3] == (task, steps, pattern))
                if not keys:
                    continue
                c = paired_comparison([ours[k]["score"] for k in keys], [theirs[k]["score"] for k in keys])
                differences[task] = c["differences"]
                mine, base = (statistics.mean(arm[k]["score"] for k in keys) for arm in (ours, theirs))
                taught = [by_fingerprint.get(ours[k].get("teacher_sha256") or theirs[k].get("teacher_sha256"),
                                             teachers.get(task)) for k in keys]
                teacher = statistics.mean(taught) if None not in taught else None
                interval = "–" if c["low"] is None else f"[{c['low']:+.3f}, {c['high']:+.3f}]"
                lines.append(f"| {task} | {pair['method']} | {pair['baseline']} | {pair['sparsity']:g} | {steps} | "
                             f"{pattern} | {c['n']} ({', '.join(str(k[3]) for k in keys)}) | {mine:.3f} | {base:.3f} | "
                             f"{c['mean']:+.3f} | {interval} | {format_p(c['p'])} | {c['verdict']} | "
                             f"{retention(mine, teacher, constant.get(task))} | "
                             f"{retention(base, teacher, constant.get(task))} |")
            if len(differences) > 1:
                p = pooled_comparison(differences)
                pooled_lines.append(f"- {pair['method']} against {pair['baseline']} at {pair['sparsity']:g}, {steps} "
                                    f"steps, {pattern}, across {', '.join(p['tasks'])} ({p['n']} pairs): mean of the "
                                    f"tasks' mean differences {p['mean']:+.4f}, sign-flip p {format_p(p['p'])}: "
                                    f"{p['verdict']}.")
    rule = ("Decision rule (fixed before the runs): an exact two-sided sign-flip test of the per-seed differences, "
            "p < 0.05, which needs at least 6 pairs to be able to resolve anything; the interval is the paired t "
            "interval of the mean difference. Across tasks, every pair's sign is flipped independently and each task's "
            "mean difference weighs the same.")
    left_out = ("\nNot paired (the teacher was retrained on another machine between the two arms):\n\n"
                + "\n".join(unpaired) + "\n") if unpaired else ""
    path.write_text(rule + "\n\n" + "\n".join(lines) + "\n"
                    + ("\n" + "\n".join(pooled_lines) + "\n" if pooled_lines else "") + left_out)
