"""Sentence embedders: quality and speed, side by side, in one run.

Rows: the dense model (default: the embedded all-MiniLM-L6-v2) in sentence-transformers with PyTorch fp32, and in
ONNX Runtime with dynamic int8 weights (the encoder exported to ONNX and quantised by onnxruntime.quantization,
then mean-pooled: what sentence-transformers' ONNX int8 backend runs; that backend itself needs optimum-onnx,
which does not install beside transformers 5); then each MODEL (an export or a pruned folder) on the sparse engine.
Columns: STS-B dev Spearman of cosine similarities (unsupervised: nothing is trained on STS-B) and its share of
the dense model's; a probe (logistic regression on [u, v, |u-v|, u*v] of frozen embeddings, trained on MRPC's
training pairs, scored on its dev pairs); sentences per second on the STS-B dev sentences at their own lengths,
batches of 32 and of 1 (a sample of 200), medians of rounds interleaved engine by engine, ONNX Runtime's threads
not spinning. Run it with nothing else on the machine.
    python benchmarks/embedder.py [MODEL ...] [--dense FOLDER] [--threads 2] [--rounds 3] [--out results/embedder]
Writes embedder.json, embedder.md and embedder.png (quality against sentences per second) into --out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sparsebert.benchmarking import onnx_session
from sparsebert.embedding import sentence_length, sts_b_pairs
from sparsebert.loading import load_encoder, load_sparse
from sparsebert.metrics import accuracy, f1, spearman
from sparsebert.models import load_tokenizer, resolve_model_path
from sparsebert.output_folders import write_json
from sparsebert.sparse.calibration import machine
from sparsebert.sparse.engine import position_count
from sparsebert.tasks import get_task, load_split


def onnx_int8_encoder(path: str, threads: int, folder: Path):
    """sentences, batch size -> normalised mean-pooled embeddings, from the dense encoder in ONNX Runtime int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sparsebert.sparse.onnx import export_onnx

    model, tokenizer = load_encoder(path).eval(), load_tokenizer(path)
    length, hidden = sentence_length(Path(path), position_count(model.config)), model.config.hidden_size
    export_onnx(model, tokenizer, folder / "model.onnx")
    quantize_dynamic(str(folder / "model.onnx"), str(folder / "model.int8.onnx"), weight_type=QuantType.QInt8)
    session = onnx_session(folder / "model.int8.onnx", threads, spinning=False)

    def encode(sentences, batch_size=32):
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        out = np.empty((len(sentences), hidden), np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer([sentences[i] for i in rows], padding=True, truncation=True, max_length=length,
                            return_tensors="np", return_token_type_ids=True)
            last = session.run(["last_hidden_state"], {k: enc[k].astype(np.int64) for k in
                                                       ("input_ids", "attention_mask", "token_type_ids")})[0]
            mask = enc["attention_mask"][:, :, None].astype(np.float32)
            pooled = (last * mask).sum(1) / mask.sum(1)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    return encode


def encoders(models: list[str], dense: str, threads: int, folder: Path) -> dict[str, callable]:
    """{label: function (sentences, batch_size) -> normalised matrix}."""
    found = {}
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(dense, device="cpu")
        found["dense, sentence-transformers (PyTorch fp32)"] = lambda s, b=32: st.encode(
            s, batch_size=b, normalize_embeddings=True, convert_to_numpy=True)
    except ImportError:
        print("sentence-transformers is not installed (pip install 'sparsebert[embed]'): its row is skipped",
              file=sys.stderr)
    try:
        found["dense, ONNX Runtime dynamic int8"] = onnx_int8_encoder(dense, threads, folder)
    except ImportError:
        print("onnxruntime is not installed (pip install 'sparsebert[onnx]'): its row is skipped", file=sys.stderr)
    for path in models:
        engine = load_sparse(path)
        found[f"sparsebert engine: {Path(path).name}"] = lambda s, b=32, e=engine: e.encode(s, batch_size=b)
    return found


def probe(encode) -> dict:
    """MRPC dev accuracy and F1 of a logistic regression on frozen embeddings of MRPC's training pairs."""
    from sklearn.linear_model import LogisticRegression

    def features(split):
        pairs = load_split(get_task("mrpc"), None, split)
        u, v = encode([p.text_a for p in pairs]), encode([p.text_b for p in pairs])
        return np.hstack([u, v, np.abs(u - v), u * v]), np.array([p.label for p in pairs])

    (x, y), (x_dev, y_dev) = features("train"), features("dev")
    predicted = LogisticRegression(max_iter=2000).fit(x, y).predict(x_dev)
    return {"mrpc_probe_accuracy": round(accuracy(y_dev, predicted), 4), "mrpc_probe_f1": round(f1(y_dev, predicted), 4)}


def table(records: list[dict]) -> str:
    rows = ["| model | STS-B dev Spearman | share of dense | MRPC probe acc / F1 | sentences/s, batch 32 | batch 1 "
            "| speed-up vs dense PyTorch (32 / 1) |", "|---|---|---|---|---|---|---|"]
    for r in records:
        probe_cell = f"{r['mrpc_probe_accuracy']:.3f} / {r['mrpc_probe_f1']:.3f}" if "mrpc_probe_accuracy" in r else "-"
        rows.append(f"| {r['model']} | {r['sts_b_dev_spearman']:.4f} | {r['share_of_dense']:.1%} | {probe_cell} | "
                    f"{r['sentences_per_second_b32']:.0f} | {r['sentences_per_second_b1']:.0f} | "
                    f"{r['speedup_b32']:.2f}x / {r['speedup_b1']:.2f}x |")
    return "\n".join(rows) + "\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in records:
        ax.scatter(r["sentences_per_second_b32"], r["sts_b_dev_spearman"])
        ax.annotate(r["model"].split(": ")[-1], (r["sentences_per_second_b32"], r["sts_b_dev_spearman"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("sentences per second, batches of 32 (STS-B dev, 2 threads)")
    ax.set_ylabel("STS-B dev Spearman (unsupervised)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="sparse models: exports or pruned folders (default: none, the "
                                                  "dense rows only)")
    parser.add_argument("--dense", default=None, help="the dense model (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-probe", action="store_true", help="skip the MRPC probe")
    parser.add_argument("--out", default="results/embedder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dense = resolve_model_path(args.dense)
    first, second, gold = sts_b_pairs()
    sentences = first + second
    with tempfile.TemporaryDirectory() as folder:
        found = encoders(args.models, dense, args.threads, Path(folder))
        records = {}
        for label, fn in found.items():
            a, b = fn(first), fn(second)
            records[label] = {"model": label, "sts_b_dev_spearman": round(spearman(gold, (a * b).sum(1)), 4),
                              **({} if args.no_probe else probe(fn))}
            print(f"{label}: STS-B dev Spearman {records[label]['sts_b_dev_spearman']:.4f}", file=sys.stderr)
        single = sentences[:200]  # batch 1: a sample, the same for every model
        times = {label: {1: [], 32: []} for label in found}
        for round_ in range(args.rounds):
            for label, fn in found.items():
                for batch, texts in ((32, sentences), (1, single)):
                    start = time.perf_counter()
                    fn(texts, batch)
                    times[label][batch].append(len(texts) / (time.perf_counter() - start))
            print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr)
    run = {**machine(), "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__}
    out = list(records.values())
    reference = out[0]
    for label, record in records.items():
        for batch in (1, 32):
            record[f"sentences_per_second_b{batch}"] = round(statistics.median(times[label][batch]), 1)
            record[f"sentences_per_second_b{batch}_min_max"] = [round(min(times[label][batch]), 1),
                                                                 round(max(times[label][batch]), 1)]
    for record in out:
        record["share_of_dense"] = round(record["sts_b_dev_spearman"] / reference["sts_b_dev_spearman"], 4)
        for batch in (1, 32):
            record[f"speedup_b{batch}"] = round(record[f"sentences_per_second_b{batch}"]
                                                / reference[f"sentences_per_second_b{batch}"], 2)
        record["machine"] = run
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "embedder.json", out)
    (folder / "embedder.md").write_text(f"Reference: {reference['model']}. {run['processor']}, "
                                        f"{', '.join(run['instruction_sets'])}, {args.threads} threads.\n\n" + table(out))
    plot(out, folder / "embedder.png")
    print(table(out))


if __name__ == "__main__":
    sys.exit(main())
