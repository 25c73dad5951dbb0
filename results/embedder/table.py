"""The embedder runs' table from their committed records: python results/embedder/table.py > results/embedder/table.md

Each row: a run of `run.sh` (records/NAME: config.yaml, metrics.json, log.jsonl), its settings that differ
between runs, STS-B dev Spearman at each evaluation and of the model it ends with, and that as a share of the
dense model's (the teacher's, measured in the same run).
"""

import json
from pathlib import Path

import yaml

RECORDS = Path(__file__).parent / "records"


def row(folder: Path) -> tuple[str, list[str]]:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    evals = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    teacher = metrics["teacher"]["sts_b_spearman"]
    final = metrics["final"]["sts_b_spearman"]
    trajectory = ", ".join(f"{e['eval']['sts_b_spearman']:.4f} ({e['sparsity']:.1%})" for e in evals)
    return folder.name, [f"{config['sparsity']:.0%}", config["pattern"], f"{config['learning_rate']:g}",
                         config["embedding_loss"], str(metrics["steps"]), trajectory, f"**{final:.4f}**",
                         f"{final / teacher:.1%}", f"{teacher:.4f}", f"{metrics['train_seconds'] / 60:.0f}"]


def main() -> None:
    header = ["run", "sparsity", "pattern", "lr", "embedding loss", "steps",
              "STS-B at each evaluation (sparsity then)", "STS-B, final model", "share of dense", "dense",
              "minutes"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for folder in sorted(RECORDS.iterdir()):
        if (folder / "metrics.json").is_file():
            name, cells = row(folder)
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
