"""The model card (README.md) of every model folder sparsebert writes: what the model is, its labels, its
dev metrics, sparsity and size, the command that made it, and how to use it."""

from __future__ import annotations

import json
from pathlib import Path


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix == ".safetensors") / 2**20


def write_model_card(folder: Path, *, summary: str, made_by: str, metrics: dict | None = None,
                     sparsity: float | None = None, extra: list[str] = ()) -> None:
    """`summary`: one sentence of what the folder holds; `made_by`: the command that re-makes it. Labels and
    the data come from the folder's config.json (models.save_model records them)."""
    config = json.loads((folder / "config.json").read_text())
    data = config.get("sparsebert_data") or {}
    regression = config.get("problem_type") == "regression" or len(config.get("id2label", {})) == 1
    labels = [config["id2label"][k] for k in sorted(config.get("id2label", {}), key=int)]
    embedder = "ForSequenceClassification" not in str(config.get("architectures"))  # an encoder alone
    lines = ["---", f"library_name: {'sentence-transformers' if embedder else 'transformers'}",
             f"pipeline_tag: {'sentence-similarity' if embedder else 'text-classification'}",
             "tags: [sparsebert, bert" + (", pruned" if sparsity else "") + "]", "---", "",
             f"# {folder.name}", "", summary, ""]
    if data.get("text_columns"):
        lines.append(f"- **Data:** your own files, task `{data['task']}`; text columns `{data['text_columns']}`")
    elif data.get("task"):
        lines.append(f"- **Task:** {data['task']} (GLUE)")
    if embedder:
        lines.append(f"- **Output:** a sentence embedding of {config['hidden_size']} dimensions (the mean of the last "
                     "layer over real tokens, normalised)")
    else:
        lines.append("- **Output:** a score (regression)" if regression else
                     f"- **Labels:** {', '.join(f'`{label}`' for label in labels)}")
    if metrics:
        shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
        lines.append("- **Dev metrics** (this model): " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    if sparsity is not None:
        lines.append(f"- **Sparsity:** {sparsity:.1%} of the encoder's linear weights are zero")
    lines.append(f"- **Weights:** {folder_megabytes(folder):.1f} MiB of safetensors")
    lines += [*extra, f"- **Made by:** `{made_by}`", ""]
    exported = (folder / "sparse_config.json").is_file()
    if embedder:
        use = ["```python", *(["import sparsebert", f'model = sparsebert.load_sparse("{folder}")  # the sparse CPU engine']
                              if exported else ["from sentence_transformers import SentenceTransformer",
                                                f'model = SentenceTransformer("{folder}")']),
               'vectors = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])', "```", "",
               f"or `sparsebert embed {folder} --input FILE --output FILE.npy` (one sentence a line, or a CSV, TSV or "
               "JSON lines column) on the sparse CPU engine" + ("" if exported else " (`sparsebert export` makes the compressed form it "
                                                       "runs fastest)") + "."]
    elif exported:
        use = ["```python", "import sparsebert", f'model = sparsebert.load_sparse("{folder}")  # the sparse CPU engine',
               'inputs = model.tokenizer(["some text"], return_tensors="pt")', "logits = model(**inputs).logits", "```",
               "", f"or `sparsebert predict {folder} --input FILE` (CSV, TSV or JSON lines)."]
    else:
        use = ["```python", "from transformers import pipeline",
               f'classify = pipeline("text-classification", model="{folder}")', 'classify("some text")', "```",
               "", f"or, on the sparse CPU engine, `sparsebert predict {folder} --input FILE` (CSV, TSV or JSON lines)."]
    lines += ["## Use", "", *use, ""]
    (folder / "README.md").write_text("\n".join(lines))
