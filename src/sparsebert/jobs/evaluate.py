"""sparsebert evaluate: dev metrics of a fine-tuned (possibly pruned) model."""

from __future__ import annotations

from pathlib import Path

from ..data import encode
from ..evaluation import evaluate
from ..models import load_model
from ..pruning.report import sparsity_report
from ..runio import write_json
from ..tasks import get_task, load_split
from . import common


def add_arguments(p) -> None:
    p.add_argument("model", help="fine-tuned model folder (from finetune, prune or export)")
    common.add_task_args(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--engine", choices=["dense", "sparse"], default="dense",
                   help="sparse: the sparse CPU engine (each matrix sparse where that is faster here)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")


def run(args) -> dict:
    common.check_sizes(args)
    task = get_task(args.task)
    model, tokenizer, path = load_model(args.model, task, new_head=False)
    common.check_seq_length(args, model.config, path)
    dev = encode(load_split(task, args.data_dir, "dev"), tokenizer, args.max_seq_length, task.is_regression)
    sparsity = sparsity_report(model)
    engine = {}
    if args.engine == "sparse":
        from ..sparse.engine import load_sparse

        model = load_sparse(path)
        print(model.describe())
        engine = {"engine_summary": model.summary()}
    metrics = evaluate(model, task, dev, args.batch_size)
    result = {"task": task.name, "model": path, "engine": args.engine, **engine, **metrics,
              "sparsity": sparsity["targets"]["sparsity"], "encoder_sparsity": sparsity["encoder"]["sparsity"]}
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                   if k != "engine_summary"))
    if args.json:
        write_json(Path(args.json), result)
    return result
