"""sparsebert export: a compressed sparse model folder (CSR and compressed embeddings in safetensors),
optionally ONNX too. The export is checked before the report is written: its weights against the model's, and
the sparse engine's logits on it against the dense model's."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..config import ExportConfig
from ..data import encode, eval_batches, model_data_settings
from ..embedding import copy_sentence_transformers_files
from ..errors import UserError
from ..inference_files import read_inputs
from ..loading import load_sparse, load_to_export
from ..modelcard import write_model_card
from ..models import load_tokenizer, resolve_model_path, save_model
from ..output_folders import prepare_output_dir, read_yaml_mapping, write_json
from ..pruning import find_targets
from ..sparse.format import export_model, named_state, read_export, state_prefix
from ..sparse.kernels import in_blocks
from ..sparse.rounding import compensated, input_grams
from ..tasks import Example, get_task, load_split

# The largest logit difference from the dense model an int8 export should keep to; past it the export says so
# (calibrated probabilities move with the logits, predictions rarely do).
INT8_LOGIT_TOLERANCE = 1e-2
# Examples whose inputs weight the int8 rounding: enough tokens (about ten thousand on MRPC) that every matrix's
# Gram matrix is well conditioned, few enough that gathering them takes seconds.
CALIBRATION_EXAMPLES = 256
SAMPLE = (["the cat sat on the mat", "dogs bark", "a much longer sentence, to be padded against the short ones"],
          ["a cat was sitting", "loudly, at night", "and its pair"])


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def first_rows(path: Path, columns: str | None) -> list[Example]:
    """The first CALIBRATION_EXAMPLES rows of a file of sentences or pairs (their texts only)."""
    examples = []
    for number, (text, second) in read_inputs(path, columns, bool(columns)):
        examples.append(Example(text, second, 0, number))
        if len(examples) == CALIBRATION_EXAMPLES:
            break
    if not examples:
        raise UserError(f"{path}: no rows to calibrate or check the export on; give a file with some")
    return examples


def own_file(folder: Path, split: str) -> tuple[Path | None, str]:
    """The training ('train') or validation ('dev') file of the user's own that made the model, as its run's
    config.yaml names it (relative to where the export runs, as to where the run ran), else None and why."""
    key = "train_file" if split == "train" else "validation_file"
    record = folder / "config.yaml"
    named = read_yaml_mapping(record, "a run's config").get(key) if record.is_file() else None
    if not isinstance(named, str):
        return None, f"{record} names no {key}"
    if not Path(named).is_file():
        return None, f"{named}, the {key} that {record} names, is not found here"
    return Path(named), ""


def examples_of(config: ExportConfig, model, folder: Path, split: str) -> tuple[list[Example] | None, str]:
    """Up to CALIBRATION_EXAMPLES inputs, and what they are. To calibrate the int8 rounding on ('train'): the rows of
    --calibration FILE, else the model's training data: its own files' (as its run's config.yaml names them) or
    the GLUE task's it records. To check the export on ('dev'): the model's validation data likewise, else the
    file's rows, else (a sentence embedder) the first sentences of STS-B's dev pairs. Without any: None, and why."""
    given = None if config.calibration in ("auto", "none") else Path(config.calibration)
    if given is not None and not given.is_file():
        raise UserError(f"--calibration {config.calibration}: no such file; give a file of sentences (one a line, "
                        "or CSV, TSV or JSON lines with a text column), 'auto' or 'none'")
    settings = model_data_settings(model.config)
    own = "text_columns" in settings  # trained on the user's own files
    kind = {"train": "training", "dev": "validation" if own else "dev"}[split]
    why = "the model records no GLUE task"
    if given is None or split == "dev":
        if own:
            found, why = own_file(folder, split)
            if found:
                rows = first_rows(found, settings["text_columns"])
                return rows, f"the first {len(rows)} rows of {found} (the model's {kind} file)"
        elif settings.get("task"):
            task = get_task(settings["task"])
            try:
                examples = load_split(task, None, split)[:CALIBRATION_EXAMPLES]
                return examples, f"the first {len(examples)} {task.name} {kind} examples"
            except UserError:  # a split that is not bundled (QNLI's training examples)
                why = f"{task.name}'s {kind} examples are not bundled"
    if given is not None:
        rows = first_rows(given, None)
        return rows, f"the first {len(rows)} rows of {given}"
    if split == "dev" and model.base_model is model:  # a sentence embedder: sentences like those it is scored on
        pairs = load_split(get_task("sts-b"), None, "dev")[:CALIBRATION_EXAMPLES]
        return pairs, f"the first sentences of the first {len(pairs)} STS-B dev pairs"
    return None, f"{why}: give --calibration FILE"


def int8_rounding(config: ExportConfig, model, folder: Path) -> tuple[str | None, list[Example] | None]:
    """How the int8 values are rounded, said ("compensated, on ..." or "nearest (why)"; None when the values are not
    int8), and the examples to calibrate the compensated rounding on (None for nearest). The examples are read only
    when they are used."""
    if config.values != "int8":
        return None, None
    if config.calibration == "none":
        return "nearest", None
    state, targets = named_state(model)
    if in_blocks({name: state[name] for name in targets}, "int8"):
        # the block kernel quantizes its activations too, and weights tuned to fp32 inputs fared worse there
        return "nearest (1x4 blocks)", None
    examples, source = examples_of(config, model, folder, "train")
    return (f"compensated, on {source}", examples) if examples else (f"nearest ({source})", None)


def example_batches(model, tokenizer, examples: list[Example]) -> list[dict]:
    """Examples as the model reads them: cut at the length it was trained with, in batches of 32 (labels unused)."""
    length = model_data_settings(model.config).get("max_seq_length", 128)
    return list(eval_batches(encode(examples, tokenizer, length, regression=model.config.num_labels == 1), 32))


def agreement(model, engine, tokenizer, examples: list[Example] | None) -> dict:
    """The engine on the export against the dense model, on `examples` (else on three sample pairs): the largest
    logit (or sentence embedding) difference and, for a classifier, the predictions that change."""
    import torch

    from ..sparse.engine import from_hf_model

    if model.base_model is model:  # a sentence embedder
        texts = [e.text_a for e in examples] if examples else SAMPLE[0]
        dense = from_hf_model(model, tokenizer, engine="dense")
        dense.max_seq_length = engine.max_seq_length
        return {"max_embedding_diff_vs_dense": float(abs(engine.encode(texts) - dense.encode(texts)).max())}
    if examples:
        batches = example_batches(model, tokenizer, examples)
    else:
        batches = [tokenizer(*SAMPLE, padding=True, return_tensors="pt")]
    moved, changed = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            expected, got = model(**inputs).logits, engine(**inputs).logits
            moved = max(moved, float((got - expected).abs().max()))
            changed += int((got.argmax(-1) != expected.argmax(-1)).sum())  # none with one logit (regression)
    report = {"max_logit_diff_vs_dense": moved}
    if model.config.num_labels > 1:
        report["predictions_changed"] = changed
    return report


def int8_roundings(model, tokenizer, examples: list[Example]) -> dict:
    """Each pruned matrix's compensated rounding, by its name in the export, weighted by its inputs on these
    examples. Both steps show their progress: on a large model each takes minutes."""
    from tqdm import tqdm

    batches = example_batches(model, tokenizer, examples)
    grams = input_grams(model.eval(), tqdm(batches, desc="int8 calibration: inputs", unit="batch"),
                        list(find_targets(model)))
    bar = tqdm(total=len(grams), desc="int8 calibration: rounding", unit="matrix")

    def ticking(rounding):
        def round_and_tick(*arrays):
            rounded = rounding(*arrays)
            bar.update()
            if bar.n == bar.total:
                bar.close()
            return rounded
        return round_and_tick
    return {f"{state_prefix(model)}{name}.weight": ticking(compensated(gram)) for name, gram in grams.items()}


def run(config: ExportConfig) -> dict:
    from ..sparse.engine import check_engine_runs

    path = resolve_model_path(config.model)
    if Path(config.output).resolve() == Path(path).resolve():
        raise UserError("the output folder must differ from the model folder")
    if config.onnx:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("--onnx needs onnx and onnxruntime: pip install 'sparsebert[onnx]'") from None
    tokenizer = load_tokenizer(path)
    model = load_to_export(path)
    check_engine_runs(model.config)
    classifier = model.base_model is not model
    rounding, examples = int8_rounding(config, model, Path(path))
    roundings = int8_roundings(model, tokenizer, examples) if examples else None
    checks, checked_on = examples_of(config, model, Path(path), "dev")
    out = prepare_output_dir(config.output, config.overwrite)
    report = export_model(model, tokenizer, out, config.values, config.embeddings, roundings)
    report["rounding"] = rounding
    copy_sentence_transformers_files(Path(path), out)
    with tempfile.TemporaryDirectory() as dense_folder:
        save_model(model, tokenizer, Path(dense_folder))
        report["dense_folder_bytes"] = folder_bytes(Path(dense_folder))
    report["folder_compression"] = round(report["dense_folder_bytes"] / report["folder_bytes"], 2)

    tensors, matrices = read_export(out)
    tensors.update({name: m.dense_weight() for name, m in matrices.items()})
    original, _ = named_state(model)
    report["max_weight_error"] = max(float((original[k].float() - tensors[k]).abs().max()) for k in tensors)
    engine = load_sparse(out)
    report["engine"] = engine.summary()
    report.update(agreement(model, engine, tokenizer, checks), checked_examples=len(checks or SAMPLE[0]),
                  checked_on=checked_on if checks else f"three sample {'pairs' if classifier else 'sentences'}")
    if config.onnx:
        from ..sparse.onnx import export_onnx

        report["onnx"] = export_onnx(model, tokenizer, out / "model.onnx")
    write_json(out / "export_report.json", report)
    agrees = (f"logits within {report['max_logit_diff_vs_dense']:.1e}" if classifier
              else f"sentence embeddings within {report['max_embedding_diff_vs_dense']:.1e}")
    agrees += f" of dense on {report['checked_on']}"
    if "predictions_changed" in report:
        agrees += f" ({report['predictions_changed']} of {report['checked_examples']} predictions changed)"
    metrics = json.loads((Path(path) / "metrics.json").read_text()) if (Path(path) / "metrics.json").is_file() else {}
    write_model_card(out, summary=f"The compressed sparse form of `{path}` ({config.values} values, "
                                  f"{config.embeddings} embeddings), {report['folder_compression']}x smaller than its "
                                  "dense folder, by sparsebert.",
                     made_by=f"sparsebert export {config.model} {config.output} --values {config.values} --embeddings "
                             f"{config.embeddings}", metrics=metrics.get("final"),
                     extra=[f"- **Dev metrics** are the dense model's; the export's {agrees}"]
                     if metrics.get("final") else [])
    print(f"pruned matrices: {report['pruned_dense_bytes'] / 2**20:.1f} MiB dense fp32 -> "
          f"{report['pruned_compressed_bytes'] / 2**20:.2f} MiB stored ({report['pruned_compression']}x); "
          f"whole folder {report['dense_folder_bytes'] / 2**20:.1f} MiB dense -> {report['folder_bytes'] / 2**20:.1f} "
          f"MiB ({report['folder_compression']}x); {agrees}; "
          + (f"int8 values rounded {rounding}; " if rounding else "") + f"report: {out / 'export_report.json'}")
    if classifier and config.values == "int8" and report["max_logit_diff_vs_dense"] > INT8_LOGIT_TOLERANCE:
        print(f"note: this int8 export moves the model's logits by up to {report['max_logit_diff_vs_dense']:.2g} on "
              f"{report['checked_on']} (more than {INT8_LOGIT_TOLERANCE:g}); where the logits themselves matter "
              "(probabilities), export with --values fp16 (and --embeddings fp16)")
    return report
