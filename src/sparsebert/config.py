"""Each job's settings as one dataclass, with its defaults, help and checks in one place.

The command line is generated from these classes, the Python API takes their fields as keyword arguments,
presets and experiment grids are mappings of their fields, and the `config.yaml` a run writes is one of them
as YAML, which `--config` reads back. This module imports nothing heavy, so `sparsebert JOB --help` answers
at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

# the names the pruning and export components register (tests check they agree)
CRITERIA = ("magnitude", "taylor")
ALLOCATIONS = ("global", "uniform")
PATTERNS = ("unstructured", "1x4")
VALUE_DTYPES = ("int8", "fp16", "fp32")
BENCH_ENGINES = ("pytorch-fp32", "pytorch-int8", "onnxruntime-fp32", "onnxruntime-int8",
                 "sparsebert-fp32", "sparsebert-int8", "sparsebert-int8-1x4")
METRICS = ("accuracy", "f1_macro", "f1", "matthews_corr", "spearman", "pearson")
MIN_SEQ_LENGTH = 8  # a pair's [CLS] a [SEP] b [SEP] with room for a word of each: below it, truncation gives up


def setting(default=None, help: str = "", group: str = "settings", *, choices=None, positional: bool = False,
            required: bool = False, invocation: bool = False, metavar: str | None = None):
    """A field of a job's config. `invocation`: how the command is run (--overwrite, --resume), not what it
    runs; left out of the config.yaml a run writes."""
    return field(default=default, metadata=dict(help=help, group=group, choices=choices, positional=positional,
                                                required=required, invocation=invocation, metavar=metavar))


def _base_type(annotation):
    """int for `int`, str for `str | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


class JobConfig:
    """What every job config shares: coercion of values from YAML or Python, checks, YAML-ready dicts."""

    job: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f, kind in _fields(type(self)):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), kind))
            choices = f.metadata["choices"]
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise UserError(f"{_flag(f.name)} {value}: choose one of {', '.join(choices)}")
            if value is None and (f.metadata["required"] or f.metadata["positional"]):
                what = f.name.upper() if f.metadata["positional"] else _flag(f.name)
                raise UserError(f"{what} is required (`sparsebert {self.job} --help`)")
        if not getattr(self, "resume", False):  # a resumed run is checked once its config.yaml is read back
            self.check()

    def check(self) -> None:
        """Checks of values alone (no files read); a job checks its files itself."""

    def to_dict(self, settings_only: bool = False) -> dict:
        return {f.name: getattr(self, f.name) for f, _ in _fields(type(self))
                if not (settings_only and f.metadata["invocation"])}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _fields(cls) -> list[tuple[dataclasses.Field, type]]:
    hints = typing.get_type_hints(cls)
    return [(f, _base_type(hints[f.name])) for f in dataclasses.fields(cls)]


def _coerce(name: str, value, kind):
    """YAML reads 1e-4 as a string and Python callers pass Paths and lists; each becomes the field's type."""
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{_flag(name)}: '{value}' is not true or false")
    if kind in (int, float):
        if isinstance(value, bool):
            raise UserError(f"{_flag(name)}: {value} is not a number")
        try:
            number = kind(value) if isinstance(value, str) else value
        except ValueError:
            raise UserError(f"{_flag(name)}: '{value}' is not {'a whole' if kind is int else 'a'} number") from None
        if kind is int and (not float(number).is_integer()):
            raise UserError(f"{_flag(name)}: {value} is not a whole number")
        return kind(number)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value) if isinstance(value, Path) else value


def build(cls, values: dict, path, section: str):
    """A config from a mapping: a section (`prune`, a grid's job) of the YAML file `path`; an unknown key is an
    error naming both."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{path}: unknown setting '{unknown[0]}' in {section}:")
    return cls(**values)


def add_arguments(parser: argparse.ArgumentParser, cls, defaults: dict | None = None) -> None:
    """The job's flags, grouped as its config groups them; `defaults` (from --config) replace the class's."""
    defaults = defaults or {}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f, kind in _fields(cls):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default = defaults.get(f.name, f.default)
        options: dict = {"help": meta["help"], "default": default}
        if meta["positional"]:
            if f.name in defaults:
                options["nargs"] = "?"
            group.add_argument(f.name, metavar=meta["metavar"] or f.name.upper(), **options)
            continue
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
        else:
            options.update(type=kind, metavar=meta["metavar"])
            if meta["choices"]:
                options["choices"] = meta["choices"]
        if meta["required"] and f.name not in defaults:
            options["required"] = True
        group.add_argument(_flag(f.name), dest=f.name, **options)


def from_namespace(cls, namespace: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(namespace).items() if k in names})


def read_config_file(path, job: str) -> dict:
    """A YAML file of a job's settings (the config.yaml a run writes); what the run recorded beside its settings
    (the paths it resolved) is dropped."""
    from .runio import read_yaml_mapping

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: file not found")
    values = read_yaml_mapping(path, "a job's config")
    written_by = values.pop("job", job)
    if written_by != job:
        raise UserError(f"{path}: the config of a `sparsebert {written_by}`; run it with that job")
    for key in RECORDS:
        values.pop(key, None)
    names = {f.name for f in dataclasses.fields(CONFIGS[job])}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"{path}: unknown setting '{unknown[0]}' for sparsebert {job}; "
                        f"`sparsebert {job} --help` lists them (with - for _)")
    return values


RECORDS = ("model_path", "student_path")  # what a run's config.yaml records about it, not settings


def check_sizes(config, names=("batch_size",)) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise UserError(f"{_flag(name)} must be at least 1")


def check_seq_length(length: int) -> None:
    if not MIN_SEQ_LENGTH <= length <= 512:
        raise UserError(f"--max-seq-length {length}: give {MIN_SEQ_LENGTH} to 512 tokens "
                        "(BERT-family encoders take at most 512)")


# ---------------------------------------------------------------------------------------------------- data

@dataclass
class DataConfig(JobConfig):
    task: str | None = setting(None, "GLUE task, any case, with or without hyphen (default: the one the model was "
                                     "trained on; training jobs: mrpc); with your own files (--validation-file), "
                                     "their task's name (default: the file's)", "data")
    data_dir: str | None = setting(None, "task folder of the GLUE distribution (default: the bundled copy)", "data")
    validation_file: str | None = setting(
        None, "your own dev data: CSV, TSV or JSON lines with named columns (training jobs: with --train-file)",
        "data")
    text_columns: str | None = setting(
        None, "your data's text column, or two comma-separated for pairs (default: text, or sentence1,sentence2)",
        "data", metavar="A[,B]")
    label_column: str | None = setting(None, "your data's label column (default: label, or the model's)", "data")
    regression: bool = setting(False, "your labels are numbers to predict (default: when they have decimals; "
                                      "whole numbers are class names)", "data")
    metric: str | None = setting(None, "the main metric, reported first (default: accuracy for your classes, "
                                       "spearman for "
                                       "regression, the task's for GLUE)", "data", choices=METRICS)
    max_seq_length: int = setting(128, "tokens per example after truncation", "data")

    def check(self) -> None:
        check_seq_length(self.max_seq_length)
        if self.text_columns is not None and not 1 <= len(self.text_columns.split(",")) <= 2:
            raise UserError(f"--text-columns {self.text_columns}: give one column, or two for pairs, comma-separated")


@dataclass
class TrainDataConfig(DataConfig):
    train_file: str | None = setting(None, "training data: your own (CSV, TSV, JSON lines; with --validation-file), "
                                           "or a TSV in the GLUE task's format (e.g. augmented)", "data")
    max_train_samples: int = setting(0, "use only the first N training rows (0: all)", "data")

    def check(self) -> None:
        super().check()
        if self.max_train_samples < 0:
            raise UserError("--max-steps and --max-train-samples must be 0 (no limit) or more")
        if self.validation_file and not self.train_file:
            raise UserError("--validation-file: give --train-file too (your own data is read from both)")


# ---------------------------------------------------------------------------------------------------- training

@dataclass
class TrainingSettings(JobConfig):
    """What every training job sets: its output folder, the optimiser, the schedule, evaluation, the device."""
    output: str | None = setting(None, "output folder (must be empty unless --overwrite)", "output", required=True)
    overwrite: bool = setting(False, "write into a non-empty output folder", "output", invocation=True)
    resume: bool = setting(False, "continue the run in --output from its latest complete checkpoint, with its "
                                  "config.yaml; only inputs that moved may be given anew (--teacher, --student, "
                                  "--model, --train-file, --validation-file, --data-dir); every other setting, the learning "
                                  "rate included, is the saved one",
                           "output", invocation=True)
    save_every: int = setting(200, "checkpoint every N steps (0: never)", "output")
    keep_checkpoints: int = setting(2, "how many recent checkpoints to keep (`run` and `experiment` delete them "
                                       "when the job is done)", "output")
    epochs: float = setting(3.0, "passes over the training data", "training")
    max_steps: int = setting(0, "stop after this many optimiser steps (0: epochs decide)", "training")
    batch_size: int = setting(32, "examples per optimiser step", "training")
    learning_rate: float = setting(5e-5, "peak learning rate of the encoder", "training")
    lr_schedule: str = setting("linear", "after warm-up: linear decay to zero, or constant", "training",
                               choices=("linear", "constant"))
    warmup: float = setting(0.1, "fraction of the steps for linear LR warm-up", "training")
    weight_decay: float = setting(0.01, "AdamW weight decay (not on biases and LayerNorm)", "training")
    seed: int = setting(42, "fixes the data order, the new head and dropout: a CPU run repeats bit for bit",
                        "training")
    eval_every: int = setting(0, "evaluate every N steps (0: at the end of each epoch)", "training")
    eval_batch_size: int = setting(64, "examples per evaluation batch", "training")
    device: str = setting("auto", "auto: a GPU where there is one", "training", choices=("auto", "cpu", "cuda"))
    precision: str = setting("fp32", "autocast precision of the forward pass (fp16 needs a GPU)", "training",
                             choices=("fp32", "bf16", "fp16"))

    def check(self) -> None:
        super().check()
        check_sizes(self, ("batch_size", "eval_batch_size"))
        if self.epochs is not None and self.epochs <= 0 and self.max_steps <= 0:
            raise UserError("--epochs must be positive (or give --max-steps)")
        if self.max_steps < 0:
            raise UserError("--max-steps and --max-train-samples must be 0 (no limit) or more")
        if self.learning_rate <= 0:
            raise UserError("--learning-rate must be positive")
        if not 0 <= self.warmup < 1:
            raise UserError("--warmup is a fraction of the run, in [0, 1)")
        if self.save_every < 0 or self.keep_checkpoints < 1:
            raise UserError("--save-every must be >= 0 and --keep-checkpoints >= 1")


@dataclass
class TrainingConfig(TrainingSettings, TrainDataConfig):
    """A training job on a task's data (GLUE, or your own files), with a task head."""
    head_learning_rate: float | None = setting(None, "peak learning rate of the task head (default: "
                                                     "--learning-rate)", "training")

    def check(self) -> None:
        super().check()
        if self.head_learning_rate is not None and self.head_learning_rate <= 0:
            raise UserError("--head-learning-rate must be positive")


# Fine-tuning epochs per GLUE task at finetune's default rates: the best final dev score of the teacher sweep
# (results/teachers). Tasks not in the sweep and your own files get 3.
TEACHER_EPOCHS = {"MRPC": 3.0, "RTE": 5.0, "CoLA": 5.0, "STS-B": 3.0}


@dataclass
class FinetuneConfig(TrainingConfig):
    """Ordinary fine-tuning on the task's labels: how teachers are made."""
    job: typing.ClassVar[str] = "finetune"
    model: str | None = setting(None, "pre-trained encoder folder or hub id (default: the embedded MiniLM)", "model")
    epochs: float | None = setting(None, "passes over the training data (default: the task's, measured in "
                                         "results/teachers: " + ", ".join(f"{t} {e:g}" for t, e in
                                                                          TEACHER_EPOCHS.items())
                                         + "; 3 for other tasks and your own files)", "training")
    learning_rate: float = setting(1e-4, "peak learning rate of the encoder", "training")
    head_learning_rate: float | None = setting(1e-3, "peak learning rate of the new task head (None: "
                                                     "--learning-rate)", "training")

    def epochs_for(self, task) -> float:
        """--epochs, or the task's number: GLUE tasks have their own (the sweep's best), others 3."""
        if self.epochs is not None:
            return self.epochs
        return 3.0 if task.files else TEACHER_EPOCHS.get(task.name, 3.0)


@dataclass
class PruningSettings(JobConfig):
    """How a training job prunes: the target, the schedule, the criterion and the pattern."""
    sparsity: float = setting(0.95, "fraction of the encoder's linear weights removed at the end", "pruning")
    prune_events: int = setting(100, "how many times the masks are recomputed", "pruning")
    prune_start: float = setting(0.0, "fraction of the run before pruning starts", "pruning")
    prune_end: float = setting(0.6, "fraction of the run where the target is reached; the rest recovers at it "
                                    "(paper: 1.0)", "pruning")
    criterion: str = setting("taylor", "taylor: w²·E[g²] of the distillation loss; magnitude: |w| (paper)",
                             "pruning", choices=CRITERIA)
    taylor_decay: float = setting(0.95, "taylor: the decay of E[g²]'s moving average (0.99: about 100 steps of "
                                        "memory, a steadier estimate)", "pruning")
    allocation: str = setting("uniform", "uniform: the same sparsity in every matrix (paper); global: one "
                                         "threshold over all", "pruning", choices=ALLOCATIONS)
    pattern: str = setting("unstructured", "unstructured: single weights (paper); 1x4: blocks of 4 inputs, which "
                                           "the sparse engine runs in int8 (faster)", "pruning", choices=PATTERNS)

    def check(self) -> None:
        super().check()
        if not 0 <= self.sparsity < 1:
            raise UserError(f"--sparsity {self.sparsity}: give a fraction in [0, 1), e.g. 0.95 for 95% removed")
        if not 0 <= self.prune_start <= self.prune_end <= 1:
            raise UserError("--prune-start and --prune-end are fractions of the run with start <= end")
        if self.prune_events < 1:
            raise UserError("--prune-events must be at least 1")
        if not 0 <= self.taylor_decay < 1:
            raise UserError("--taylor-decay is a decay in [0, 1)")


@dataclass
class LayerDistillationSettings(JobConfig):
    """How a student learns from its teacher's layers: the attention and hidden-state terms (docs/METHOD.md)."""
    attention_loss: str = setting("kl", "scores: MSE before the softmax (paper); probs: MSE after it; kl: KL of "
                                        "the distributions", "distillation", choices=("scores", "probs", "kl"))
    hidden_norm: str = setting("teacher-var", "teacher-var: each layer's MSE over the teacher's variance there; "
                                              "none (paper)", "distillation", choices=("none", "teacher-var"))


@dataclass
class PruneConfig(PruningSettings, LayerDistillationSettings, TrainingConfig):
    """Pruning at distilling (docs/METHOD.md). Defaults: the recipe measured in results/recipe; the values
    named "paper" in the help give the paper's exact recipe (`sparsebert run --preset paper`)."""
    job: typing.ClassVar[str] = "prune"
    teacher: str | None = setting(None, "model fine-tuned on the task (sparsebert finetune)", "model")
    student: str | None = setting(None, "pre-trained encoder to prune (default: the embedded MiniLM)", "model")
    init: str = setting("pretrained", "pretrained: prune the pre-trained encoder (paper); teacher: prune the "
                                      "fine-tuned model", "model", choices=("pretrained", "teacher"))
    student_head: str = setting("new", "new: a freshly initialised classifier (paper); teacher: start the "
                                       "student's pooler and classifier from the teacher's", "model",
                                choices=("new", "teacher"))
    student_layers: int | None = setting(None, "train a smaller dense student cut from --student: this many "
                                               "layers (small-dense baseline)", "model")
    student_hidden: int | None = setting(None, "... and this hidden size (a multiple of the number of heads)",
                                         "model")
    epochs: float = setting(8.0, "passes over the training data", "training")
    learning_rate: float = setting(2e-4, "peak learning rate of the encoder", "training")
    head_learning_rate: float | None = setting(2e-3, "peak learning rate of the task head (None: "
                                                     "--learning-rate)", "training")
    warmup: float = setting(0.05, "fraction of the steps for linear LR warm-up", "training")
    lr_schedule: str = setting("linear", "after warm-up: linear decay to zero, constant, or rewind: decay to zero "
                                         "where the target sparsity is reached (--prune-end), then back to the peak "
                                         "and decay to zero again", "training", choices=("linear", "constant", "rewind"))
    no_teacher: bool = setting(False, "baseline: pruning during ordinary fine-tuning on the labels, no teacher",
                               "distillation")
    distill: str = setting("full", "full: attention + hidden + prediction (paper); logits: prediction only",
                           "distillation", choices=("full", "logits"))
    temperature: float = setting(1.0, "of the prediction term's softmax", "distillation")
    gold_weight: float = setting(0.0, "share of the gold labels in the prediction term: (1-g)·soft cross-entropy "
                                      "with the teacher + g·cross-entropy with the labels (classification)",
                                 "distillation")
    loss_weights: str = setting("1,1,4", "weights of the attention, hidden, prediction terms (paper: 1,1,1)",
                                "distillation", metavar="A,H,P")
    cache_teacher: bool = setting(True, "compute the teacher's outputs once and reuse them (where it fits)",
                                  "distillation")
    cache_limit_gb: float = setting(8.0, "largest teacher cache kept in memory", "distillation")

    def check(self) -> None:
        super().check()
        if self.temperature <= 0:
            raise UserError("--temperature must be positive")
        if not 0 <= self.gold_weight <= 1:
            raise UserError("--gold-weight is a share in [0, 1]")
        if self.no_teacher == (self.teacher is not None):
            raise UserError("give --teacher MODEL (a model fine-tuned on the task) or --no-teacher, not both or "
                            "neither")
        if self.no_teacher and "teacher" in (self.init, self.student_head):
            raise UserError(f"--{'init' if self.init == 'teacher' else 'student-head'} teacher needs --teacher")
        self.distillation_weights()

    def distillation_weights(self) -> tuple[float, float, float]:
        return loss_weights(self.loss_weights, ("attention", "hidden", "prediction"))


def loss_weights(text: str, terms: tuple[str, ...]) -> tuple[float, ...]:
    """--loss-weights: one non-negative number per loss term, comma-separated, in the order of `terms`."""
    try:
        weights = tuple(float(x) for x in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != len(terms) or min(weights) < 0:
        raise UserError(f"--loss-weights '{text}': give {len(terms)} non-negative numbers: {','.join(terms)}")
    return weights


# ---------------------------------------------------------------------------------------------------- the rest

@dataclass
class RunConfig(JobConfig):
    """The main job: fine-tune a teacher, prune at distilling, report both."""
    job: typing.ClassVar[str] = "run"
    task: str = setting("mrpc", "GLUE task", "data")
    data_dir: str | None = setting(None, "task folder (default: the bundled copy)", "data")
    sparsity: float | None = setting(None, "fraction of the encoder's weights removed (default: the preset's, "
                                           "else 0.95)", "pruning")
    preset: str = setting("quick", "quick, long, paper, or a YAML file of the same form", "training")
    model: str | None = setting(None, "pre-trained encoder (default: the embedded MiniLM)", "model")
    seed: int = setting(42, "fixes the whole run on a CPU", "training")
    device: str = setting("auto", "auto: a GPU where there is one", "training", choices=("auto", "cpu", "cuda"))
    output: str | None = setting(None, "run folder (default: runs/<task>-<sparsity>-<time>)", "output")
    overwrite: bool = setting(False, "write into a non-empty output folder", "output", invocation=True)
    resume: bool = setting(False, "continue the run in --output with its config.yaml: a finished teacher is kept, "
                                  "a job cut off goes on from its latest checkpoint", "output", invocation=True)

    def check(self) -> None:
        if self.sparsity is not None and not 0 <= self.sparsity < 1:
            raise UserError(f"--sparsity {self.sparsity}: give a fraction in [0, 1)")


@dataclass
class EvaluateConfig(DataConfig):
    """Dev metrics (and sparsity) of a model."""
    job: typing.ClassVar[str] = "evaluate"
    model: str | None = setting(None, "fine-tuned model folder (from finetune, prune or export)", "model",
                                positional=True)
    batch_size: int = setting(64, "examples per batch", "engine")
    engine: str = setting("dense", "sparse: the sparse CPU engine (each matrix sparse where that is faster here)",
                          "engine", choices=("dense", "sparse"))
    json: str | None = setting(None, "also write the metrics to this JSON file", "output")

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
    onnx: bool = setting(False, "also write model.onnx (dense form) and check it", "output")
    overwrite: bool = setting(False, "write into a non-empty output folder", "output", invocation=True)


@dataclass
class BenchConfig(JobConfig):
    """Every engine side by side: dense PyTorch, its int8, ONNX Runtime, the sparse engine."""
    job: typing.ClassVar[str] = "bench"
    model: str | None = setting(None, "a pruned model folder (default: the embedded MiniLM, magnitude-pruned to "
                                      "each of --sparsities)", "model")
    sparsities: str = setting("0.8,0.9,0.95,0.97", "for the embedded model", "model")
    engines: str = setting(",".join(BENCH_ENGINES), "comma-separated (the ONNX Runtime ones are skipped when it is "
                                                    "not installed)", "engine")
    batch_sizes: str = setting("1,32", "comma-separated", "engine")
    seq_length: int = setting(128, "tokens per sequence of the random batches", "engine")
    threads: str = setting("1,2", "thread counts, comma-separated", "engine")
    dev_task: str = setting("mrpc", "also time this task's dev set at its own lengths, at the sparsity nearest "
                                    "0.95 ('none': skip)", "engine")
    repeats: int = setting(10, "timed calls per measurement", "engine")
    warmup: int = setting(2, "untimed calls first", "engine")
    json: str = setting("bench.json", "the records; the table (.md) and the plot go beside it", "output")
    plot: str | None = setting(None, "PNG of latency against sparsity (default: beside --json)", "output")
    collect: bool = setting(False, "time nothing: write the table and the plot from an existing --json", "output")

    def check(self) -> None:
        whole_numbers(self.batch_sizes, "--batch-sizes")
        whole_numbers(self.threads, "--threads")
        if self.seq_length < 2 or self.repeats < 1 or self.warmup < 0:
            raise UserError("--seq-length must be at least 2, --repeats at least 1, --warmup at least 0")
        unknown = [e for e in self.engines.split(",") if e not in BENCH_ENGINES]
        if unknown:
            raise UserError(f"--engines: unknown '{unknown[0]}'; choose from {', '.join(BENCH_ENGINES)}")
        if not self.model:
            fractions(self.sparsities, "--sparsities")


def whole_numbers(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} '{text}': give whole numbers separated by commas") from None
    if min(values) < 1:
        raise UserError(f"{flag} '{text}': every value must be at least 1")
    return values


def fractions(text: str, flag: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} '{text}': give fractions separated by commas") from None
    if not all(0 <= s < 1 for s in values):
        raise UserError(f"{flag} '{text}': every value is a fraction in [0, 1)")
    return values


@dataclass
class PredictConfig(JobConfig):
    """Labels and probabilities for new text, through the sparse engine."""
    job: typing.ClassVar[str] = "predict"
    model: str | None = setting(None, "fine-tuned or pruned model folder, or a compressed export", "model",
                                positional=True)
    input: str | None = setting(None, "CSV, TSV or JSON lines file of texts", "data", required=True)
    text_columns: str | None = setting(None, "the text column(s), comma-separated (default: the model's, as it "
                                             "was trained)", "data", metavar="A[,B]")
    max_seq_length: int = setting(128, "tokens per example after truncation", "data")
    output: str | None = setting(None, "JSON lines of predictions (default: standard output)", "output")
    overwrite: bool = setting(False, "replace an existing --output file", "output", invocation=True)
    batch_size: int = setting(32, "examples per batch", "engine")
    chunk: int = setting(1024, "rows read, predicted and written at a time (the input file is streamed: steady memory at any length)", "engine")
    dense: bool = setting(False, "use dense PyTorch instead of the sparse engine", "engine")

    def check(self) -> None:
        check_sizes(self, ("batch_size", "chunk"))
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
    overwrite: bool = setting(False, "replace an existing --output file", "output", invocation=True)
    batch_size: int = setting(32, "sentences per batch", "engine")
    normalize: bool = setting(True, "scale each embedding to length 1 (cosine similarity is then a dot product)",
                              "engine")

    def check(self) -> None:
        check_sizes(self)
        if self.output and Path(self.output).suffix.lower() not in (".npy", ".jsonl"):
            raise UserError(f"--output {self.output}: give a .npy or a .jsonl file")


@dataclass
class EmbedderConfig(PruningSettings, LayerDistillationSettings, TrainingSettings):
    """Pruning a sentence embedder while it distils from its dense self, on unlabelled sentences: the student (a
    copy of --model) is pruned while it learns the teacher's (the model as it is) pooled sentence embedding,
    hidden states and attention. The quality check: STS-B dev Spearman of cosine similarities, unsupervised."""
    job: typing.ClassVar[str] = "prune-embedder"
    model: str | None = setting(None, "the sentence-embedding model, mean-pooled: the teacher as it is, the student "
                                      "pruned (default: the embedded all-MiniLM-L6-v2)", "model")
    sentences: str | None = setting(None, "training sentences: a text file with one a line, or CSV, TSV or JSON lines "
                                          "with a text column (default: the bundled GLUE tasks' training sentences, "
                                          "each once; STS-B dev's kept out)", "data")
    text_column: str | None = setting(None, "the column (or JSON key) of --sentences holding the texts (default: "
                                            "text, sentence, or a plain file's whole line)", "data")
    max_seq_length: int = setting(128, "tokens per training sentence after truncation", "data")
    epochs: float = setting(1.0, "passes over the training sentences", "training")
    learning_rate: float = setting(1e-4, "peak learning rate", "training")
    warmup: float = setting(0.05, "fraction of the steps for linear LR warm-up", "training")
    lr_schedule: str = setting("linear", "after warm-up: linear decay to zero, constant, or rewind (as prune's)",
                               "training", choices=("linear", "constant", "rewind"))
    eval_every: int = setting(0, "STS-B dev Spearman every N steps (0: at the end of each epoch)", "training")
    embedding_loss: str = setting("cosine", "the sentence-embedding term: cosine: 1 - cosine similarity of student "
                                            "and teacher embeddings (what search compares); mse: MSE of the "
                                            "pooled embeddings", "distillation", choices=("cosine", "mse"))
    loss_weights: str = setting("1,1,1", "weights of the attention, hidden, embedding terms", "distillation",
                                metavar="A,H,E")

    def check(self) -> None:
        super().check()
        check_seq_length(self.max_seq_length)
        self.distillation_weights()

    def distillation_weights(self) -> tuple[float, float, float]:
        return loss_weights(self.loss_weights, ("attention", "hidden", "embedding"))


@dataclass
class AugmentConfig(JobConfig):
    """TinyBERT-style data augmentation of a task's training set."""
    job: typing.ClassVar[str] = "augment"
    task: str = setting("mrpc", "GLUE task", "data")
    data_dir: str | None = setting(None, "task folder (default: the bundled copy)", "data")
    model: str | None = setting(None, "model whose vocabulary (and masked-LM head) to use", "model")
    n_aug: int = setting(20, "variants per training row", "augmentation")
    prob: float = setting(0.4, "probability of replacing each word", "augmentation")
    top_k: int = setting(15, "candidates per word", "augmentation")
    seed: int = setting(42, "fixes the variants", "augmentation")
    output: str | None = setting(None, "TSV file to write (refused if it exists unless --overwrite)", "output",
                                 required=True)
    overwrite: bool = setting(False, "replace an existing --output file", "output", invocation=True)

    def check(self) -> None:
        if self.n_aug < 0 or not 0 <= self.prob <= 1 or self.top_k < 1:
            raise UserError("--n-aug must be >= 0, --prob in [0, 1], --top-k >= 1")


@dataclass
class ExperimentConfig(JobConfig):
    """A grid of jobs from a YAML file; tables and plots."""
    job: typing.ClassVar[str] = "experiment"
    config: str | None = setting(None, "experiment YAML (see src/sparsebert/research/experiments/)", "grid", positional=True)
    only: str | None = setting(None, "run only these variants or jobs (names as --dry-run lists them; "
                                     "comma-separated): seed by seed, within a seed in this order", "grid")
    tasks: str | None = setting(None, "run only jobs of these teachers (comma-separated)", "grid")
    dry_run: bool = setting(False, "list the jobs and whether they are done", "grid")
    collect: bool = setting(False, "run nothing; gather finished jobs into the results", "grid")


@dataclass
class TasksConfig(JobConfig):
    """The GLUE tasks, their files, labels and metrics."""
    job: typing.ClassVar[str] = "tasks"


CONFIGS = {cls.job: cls for cls in (RunConfig, FinetuneConfig, PruneConfig, EvaluateConfig, AugmentConfig,
                                    ExportConfig, BenchConfig, PredictConfig, EmbedConfig, EmbedderConfig,
                                    ExperimentConfig, TasksConfig)}
CONFIGURABLE = ("finetune", "prune", "prune-embedder", "evaluate", "export", "bench", "predict", "embed", "augment")  # by --config FILE
