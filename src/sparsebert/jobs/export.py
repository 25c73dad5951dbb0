"""sparsebert export: a compressed sparse model folder (CSR in safetensors), optionally ONNX too."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..models import load_config, load_tokenizer, resolve_model_path
from ..runio import prepare_output_dir, write_json
from ..sparse.format import export_model, load_exported


def add_arguments(p) -> None:
    p.add_argument("model", help="pruned model folder (from prune)")
    p.add_argument("output", help="folder for the compressed model (must be empty unless --overwrite)")
    p.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="precision of the stored non-zeros")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (dense form) and check it")
    p.add_argument("--overwrite", action="store_true")


def load_dense(path: str):
    from transformers import AutoModelForSequenceClassification

    config = load_config(path)
    if "ForSequenceClassification" not in str(config.architectures):
        raise UserError(f"{path}: not a fine-tuned model with a task head (sparsebert finetune or prune)")
    return AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval()


def run(args) -> dict:
    path = resolve_model_path(args.model)
    if Path(args.output).resolve() == Path(path).resolve():
        raise UserError("the output folder must differ from the model folder")
    tokenizer = load_tokenizer(path)
    model = load_dense(path)
    out = prepare_output_dir(args.output, args.overwrite)
    report = export_model(model, tokenizer, out, args.dtype)
    reloaded = load_exported(out)
    original, restored = model.state_dict(), reloaded.state_dict()
    report["max_weight_error"] = max(float((original[k] - restored[k]).abs().max()) for k in original)
    if args.onnx:
        from ..sparse.onnx import export_onnx

        report["onnx"] = export_onnx(model, tokenizer, out / "model.onnx")
    write_json(out / "export_report.json", report)
    print(f"pruned matrices: {report['pruned_dense_bytes'] / 2**20:.1f} MiB dense fp32 -> "
          f"{report['pruned_compressed_bytes'] / 2**20:.2f} MiB stored ({report['pruned_compression']}x); "
          f"folder {report['folder_bytes'] / 2**20:.1f} MiB; report: {out / 'export_report.json'}")
    return report
