"""The settings of the jobs that use a trained model: evaluate, export, bench, predict, embed, tasks."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .names import BENCH_ENGINES, VALUE_DTYPES
from .settings import (JobConfig, check_seq_length, check_sizes, check_text_columns, fractions, overwrite_file, overwrite_folder, setting,
                       whole_numbers)
from .training import DataConfig


def recorded_length():
    """The truncation length of evaluate and predict: by default the model's record (data.trained_length)."""
    return setting(None, "tokens per example after truncation (default: what the model was trained with, as it "
                         "recorded)", "data")


@dataclass
class EvaluateConfig(DataConfig):
    """Dev metrics (and sparsity) of a model."""
    job: typing.ClassVar[str] = "evaluate"
    model: str | None = setting(None, "fine-tuned model folder (from finetune, prune or export)", "model",
                                positional=True)
    batch_size: int = setting(64, "examples per batch", "engine")
    engine: str = setting("dense", "sparse: the sparse CPU engine (each matrix sparse where that is faster here)",
                          "engine", choices=("dense", "sparse"))
    json: str | None = setting(None, "also write the metrics to this JSON file (refused if it exists unless "
                                     "--overwrite)", "output")
    overwrite: bool = overwrite_file("--json")
    max_seq_length: int | None = recorded_length()

    def check(self) -> None:
        super().check()
        check_sizes(self)


@dataclass
class ExportConfig(JobConfig):
    """A compressed sparse model folder (CSR in safetensors), optionally ONNX."""
    job: typing.ClassVar[str] = "export"
    model: str | None = setting(None, "pruned model folder (from prune)", "model", positional=True)
    output: str | None = setting(None, "folder for the compressed model (must be empty unless --overwrite)",
                                 "output", positional=True)
    values: str = setting("int8", "the stored non-zeros: int8 with one scale per row, fp16 or fp32", "output",
                          choices=VALUE_DTYPES)
    embeddings: str = setting("int8", "the embedding tables: int8 with one scale per row, fp16 or fp32", "output",
                              choices=VALUE_DTYPES)
    calibration: str = setting("auto", "how int8 values are rounded: 'auto' (each row's rounding errors absorbed "
                                       "by its other values, weighted by the model's inputs on the first 256 "
                                       "examples of its training data: the GLUE task's it records, or your own "
                                       "training file that its run's config.yaml names; to nearest where there is "
                                       "none), 'none' (to nearest), or a file of sentences to calibrate on (one a "
                                       "line, or CSV, TSV or JSON lines with a 'text' column)", "output")
    onnx: bool = setting(False, "also write model.onnx (dense form) and check it", "output")
    overwrite: bool = overwrite_folder()


@dataclass
class BenchConfig(JobConfig):
    """Every engine side by side: dense PyTorch, its int8, ONNX Runtime, the sparse engine."""
    job: typing.ClassVar[str] = "bench"
    model: str | None = setting(None, "a pruned model folder or its export (default: the embedded MiniLM, "
                                      "magnitude-pruned to each of --sparsities)", "model")
    sparsities: str = setting("0.8,0.9,0.95,0.97", "for the embedded model", "model")
    engines: str = setting(",".join(BENCH_ENGINES), "comma-separated (the ONNX Runtime ones are skipped when it is "
                                                    "not installed)", "engine")
    batch_sizes: str = setting("1,32", "comma-separated", "engine")
    seq_length: int = setting(128, "tokens per sequence of the random batches", "engine")
    threads: str = setting("1,2", "thread counts, comma-separated", "engine")
    dev_task: str | None = setting(None, "also time this task's dev set at its own lengths, at the sparsity "
                                         "nearest 0.95 ('none': skip; default: with --model, the task it was "
                                         "trained on, at its length; else MRPC)", "engine")
    rounds: int = setting(5, "rounds, every engine timed once a round (1: each engine in one block, ONNX Runtime's "
                             "threads left spinning between runs, its default)", "engine")
    repeats: int = setting(5, "timed calls per measurement (the median is the round's figure)", "engine")
    warmup: int = setting(2, "untimed calls first", "engine")
    json: str = setting("bench.json", "the records; the table (.md) and the plot go beside it", "output")
    plot: str | None = setting(None, "PNG of latency against sparsity (default: beside --json)", "output")
    collect: bool = setting(False, "time nothing: write the table and the plot from an existing --json", "output")

    def check(self) -> None:
        whole_numbers(self.batch_sizes, "--batch-sizes")
        whole_numbers(self.threads, "--threads")
        if self.seq_length < 2 or self.rounds < 1 or self.repeats < 1 or self.warmup < 0:
            raise UserError("--seq-length must be at least 2, --rounds and --repeats at least 1, --warmup at least 0")
        unknown = [e for e in self.engines.split(",") if e not in BENCH_ENGINES]
        if unknown:
            raise UserError(f"--engines: unknown '{unknown[0]}'; choose from {', '.join(BENCH_ENGINES)}")
        if self.dev_task not in (None, "none"):
            from ..tasks import get_task

            get_task(self.dev_task)
        if not self.model:
            fractions(self.sparsities, "--sparsities")


@dataclass
class PredictConfig(JobConfig):
    """Labels and probabilities for new text, through the sparse engine."""
    job: typing.ClassVar[str] = "predict"
    model: str | None = setting(None, "fine-tuned or pruned model folder, or a compressed export", "model",
                                positional=True)
    input: str | None = setting(None, "CSV, TSV or JSON lines file of texts", "data", required=True)
    text_columns: str | None = setting(None, "the text column(s), comma-separated (default: the model's, as it "
                                             "was trained)", "data", metavar="A[,B]")
    max_seq_length: int | None = recorded_length()
    output: str | None = setting(None, "JSON lines of predictions (default: standard output)", "output")
    overwrite: bool = overwrite_file()
    batch_size: int = setting(32, "examples per batch", "engine")
    chunk: int = setting(1024, "rows read, predicted and written at a time (the input file is streamed: steady memory at any length)", "engine")
    dense: bool = setting(False, "use dense PyTorch instead of the sparse engine", "engine")

    def check(self) -> None:
        check_sizes(self, ("batch_size", "chunk"))
        check_text_columns(self.text_columns)
        if self.max_seq_length is not None:
            check_seq_length(self.max_seq_length)


@dataclass
class EmbedConfig(JobConfig):
    """Sentence embeddings of a file's texts, through the sparse engine (mean pooling, as sentence-transformers)."""
    job: typing.ClassVar[str] = "embed"
    model: str | None = setting(None, "an encoder folder or its export (default: the embedded all-MiniLM-L6-v2)",
                                "model", positional=True)
    input: str | None = setting(None, "text file (one sentence a line), or CSV, TSV or JSON lines with a text "
                                      "column", "data", required=True)
    text_column: str | None = setting(None, "the column (or JSON key) holding the texts (default: text, sentence "
                                            "or the first of a plain file's line)", "data")
    output: str | None = setting(None, "FILE.npy (a float32 matrix, a row per input row) or FILE.jsonl "
                                       "({\"line\": N, \"embedding\": [...]} per row)", "output", required=True)
    overwrite: bool = overwrite_file()
    batch_size: int = setting(32, "sentences per batch", "engine")
    normalize: bool = setting(True, "scale each embedding to length 1 (cosine similarity is then a dot product)",
                              "engine")

    def check(self) -> None:
        check_sizes(self)
        if self.output and Path(self.output).suffix.lower() not in (".npy", ".jsonl"):
            raise UserError(f"--output {self.output}: give a .npy or a .jsonl file")


@dataclass
class TasksConfig(JobConfig):
    """The GLUE tasks, their files, labels and metrics."""
    job: typing.ClassVar[str] = "tasks"
