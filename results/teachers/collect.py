"""Gathers the teacher sweep's finished runs (runs/teachers/*/metrics.json) into results/teachers/results.json
and table.md: each setting's final dev score (the model the run ends with) and its best evaluation beside it.
Records already in results.json (runs of an earlier machine, whose folders are gone) are kept.
    python results/teachers/collect.py [RUNS_DIR]
"""

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
MAIN = {"MRPC": "f1", "RTE": "accuracy", "CoLA": "matthews_corr", "STS-B": "spearman"}


def best_evaluation(metrics: dict, metric: str) -> dict:
    """The best dev evaluation: `best` and `best_step` in metrics.json; runs from before finetune kept its final
    model kept the best one's metrics at the top level and its step in `step`."""
    if isinstance(metrics.get("best"), dict):
        return {"best": metrics["best"][metric], "best_step": metrics["best_step"]}
    return {"best": metrics[metric], "best_step": metrics["step"]}


def main():
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parents[1] / "runs" / "teachers")
    committed = HERE / "results.json"
    records = {r["name"]: r for r in (json.loads(committed.read_text()) if committed.is_file() else [])}
    for metrics_file in sorted(runs.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        config = yaml.safe_load((metrics_file.parent / "config.yaml").read_text())
        task = next(name for name in MAIN if name.lower() == config["task"].replace("_", "-").lower())
        metric = MAIN[task]
        name = metrics_file.parent.name
        records[name] = {"name": name, "task": task, "metric": metric,
                         "learning_rate": config["learning_rate"], "head_learning_rate": config["head_learning_rate"],
                         "epochs": config["epochs"], "warmup": config["warmup"],
                         "precision": config.get("precision", "fp32"),
                         "final": metrics["final"][metric], **best_evaluation(metrics, metric),
                         "steps": metrics["steps"], "minutes": round(metrics["train_seconds"] / 60, 1)}
    records = sorted(records.values(), key=lambda r: (r["task"], -r["final"]))
    committed.write_text(json.dumps(records, indent=2) + "\n")
    lines = ["| task | encoder lr | head lr | epochs | warm-up | precision | final score | best evaluation (step) "
             "| minutes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['task']} ({r['metric']}) | {r['learning_rate']:g} | {r['head_learning_rate']:g} | "
                     f"{r['epochs']:g} | {r['warmup']:g} | {r.get('precision', 'fp32')} | {r['final']:.3f} | "
                     f"{r['best']:.3f} ({r['best_step']} of {r['steps']}) | {r['minutes']} |")
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
