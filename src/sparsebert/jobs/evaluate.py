"""sparsebert evaluate: dev metrics of a fine-tuned (possibly pruned) model."""

from __future__ import annotations

from pathlib import Path

from .. import datafiles
from ..config import EvaluateConfig
from ..data import encode, task_of, trained_length
from ..evaluation import evaluate
from ..loading import load_config, load_model, load_sparse
from ..models import check_model_positions, resolve_model_path
from ..pruning.report import sparsity_report
from ..output_folders import check_output, write_json
from ..tasks import load_split


def run(config: EvaluateConfig) -> dict:
    if config.json:
        check_output(Path(config.json), Path(config.validation_file) if config.validation_file else None,
                     config.overwrite, "--json")
    path = resolve_model_path(config.model)
    model_config = load_config(path)
    task = task_of(config, model_config)
    model, tokenizer, path = load_model(path, task, new_head=False)
    config = config.replace(max_seq_length=config.max_seq_length or trained_length(model_config, path))
    check_model_positions(config, model.config, path)
    examples = (datafiles.read_own_examples(task, config.validation_file) if task.own_files
                else load_split(task, config.data_dir, "dev"))
    dev = encode(examples, tokenizer, config.max_seq_length, task.is_regression)
    sparsity = sparsity_report(model)
    engine = {}
    if config.engine == "sparse":
        model = load_sparse(path)
        print(model.describe())
        engine = {"engine_summary": model.summary()}
    metrics = evaluate(model, task, dev, config.batch_size)
    result = {"task": task.name, "model": path, "engine": config.engine, "max_seq_length": config.max_seq_length,
              **engine, **metrics,
              "sparsity": sparsity["targets"]["sparsity"], "encoder_sparsity": sparsity["encoder"]["sparsity"]}
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                   if k != "engine_summary"))
    if config.json:
        write_json(Path(config.json), result)
    return result
