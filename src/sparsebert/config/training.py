"""The training jobs' settings: finetune, prune, run, prune-embedder, augment, experiment; their shared groups of
settings as mixins (data, training, pruning, layer distillation)."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from ..errors import UserError
from ..tasks import get_task
from .names import ALLOCATIONS, CRITERIA, METRICS, PATTERNS
from .settings import (JobConfig, check_seq_length, check_sizes, check_text_columns, device_setting, glue_data_dir, loss_weights,
                       overwrite_file, overwrite_folder, seed_setting, setting)


@dataclass
class DataConfig(JobConfig):
    task: str | None = setting(None, "GLUE task, any case, with or without hyphen (default: the one the model was "
                                     "trained on; prune: its teacher's; else mrpc); with your own files "
                                     "(--validation-file), "
                                     "their task's name (default: the file's)", "data")
    data_dir: str | None = glue_data_dir()
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
    positive_label: str | None = setting(None, "with --metric f1 on your own two classes: the label whose F1 it is "
                                               "(default: 1 where the labels are 0 and 1, or the model's)", "data")
    max_seq_length: int = setting(128, "tokens per example after truncation", "data")

    def check(self) -> None:
        if self.max_seq_length is not None:  # evaluate's default: the model's record
            check_seq_length(self.max_seq_length)
        check_text_columns(self.text_columns)
        if self.task and not self.validation_file:  # with your own files, --task names their task
            get_task(self.task)


@dataclass
class TrainDataConfig(DataConfig):
    train_file: str | None = setting(None, "training data: your own (CSV, TSV, JSON lines; with --validation-file), "
                                           "or a TSV in the GLUE task's format (e.g. augmented)", "data")
    max_train_samples: int = setting(0, "use only the first N training rows (0: all)", "data")

    def check(self) -> None:
        super().check()
        if self.max_train_samples < 0:
            raise UserError("--max-train-samples must be 0 (no limit) or more")
        if self.validation_file and not self.train_file:
            raise UserError("--validation-file: give --train-file too (your own data is read from both)")


@dataclass
class TrainingSettings(JobConfig):
    """What every training job sets: its output folder, the optimiser, the schedule, evaluation, the device."""
    output: str | None = setting(None, "output folder (must be empty unless --overwrite)", "output", required=True)
    overwrite: bool = overwrite_folder()
    resume: bool = setting(False, "continue the run in --output from its latest complete checkpoint, with its "
                                  "config.yaml; only inputs that moved may be given anew (--teacher, --student, "
                                  "--model, --train-file, --validation-file, --data-dir); every other setting, the learning "
                                  "rate included, is the saved one (given with another value: refused)",
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
    seed: int = seed_setting()
    eval_every: int = setting(0, "evaluate every N steps (0: at the end of each epoch)", "training")
    eval_batch_size: int = setting(64, "examples per evaluation batch", "training")
    device: str = device_setting()
    precision: str = setting("fp32", "autocast precision of the forward pass (fp16 needs a GPU)", "training",
                             choices=("fp32", "bf16", "fp16"))

    def check(self) -> None:
        super().check()
        check_sizes(self, ("batch_size", "eval_batch_size"))
        if self.epochs is not None and self.epochs <= 0 and self.max_steps <= 0:
            raise UserError("--epochs must be positive (or give --max-steps)")
        if self.max_steps < 0:
            raise UserError("--max-steps must be 0 (no limit) or more")
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
        return 3.0 if task.own_files else TEACHER_EPOCHS.get(task.name, 3.0)


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


@dataclass
class GlueTaskSettings(JobConfig):
    """The GLUE task of a job that reads no files of your own (run, augment)."""
    task: str = setting("mrpc", "GLUE task", "data")
    data_dir: str | None = glue_data_dir()

    def check(self) -> None:
        get_task(self.task)


@dataclass
class RunConfig(GlueTaskSettings):
    """The main job: fine-tune a teacher, prune at distilling, report both."""
    job: typing.ClassVar[str] = "run"
    sparsity: float | None = setting(None, "fraction of the encoder's weights removed (default: the preset's, "
                                           "else 0.95)", "pruning")
    preset: str = setting("quick", "quick, long, paper, or a YAML file of the same form", "training")
    model: str | None = setting(None, "pre-trained encoder (default: the embedded MiniLM)", "model")
    seed: int = seed_setting()
    device: str = device_setting()
    output: str | None = setting(None, "run folder (default: runs/<task>-<sparsity>-<time>)", "output")
    overwrite: bool = overwrite_folder()
    resume: bool = setting(False, "continue the run in --output with its config.yaml: a finished teacher is kept, "
                                  "a job cut off goes on from its latest checkpoint", "output", invocation=True)

    def check(self) -> None:
        super().check()
        if self.sparsity is not None and not 0 <= self.sparsity < 1:
            raise UserError(f"--sparsity {self.sparsity}: give a fraction in [0, 1)")


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
    sparsity: float = setting(0.9, "fraction of the encoder's linear weights removed at the end", "pruning")
    epochs: float = setting(4.0, "passes over the training sentences", "training")
    max_steps: int = setting(3200, "stop after this many optimiser steps (0: epochs decide; results/embedder: "
                                   "3,200 kept more of STS-B than 1,600 or 800)", "training")
    learning_rate: float = setting(1e-3, "peak learning rate (results/embedder: 1e-3 kept more of STS-B than 3e-4 or "
                                         "1e-4)", "training")
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
class AugmentConfig(GlueTaskSettings):
    """TinyBERT-style data augmentation of a task's training set."""
    job: typing.ClassVar[str] = "augment"
    model: str | None = setting(None, "model whose vocabulary (and masked-LM head) to use", "model")
    n_aug: int = setting(20, "variants per training row", "augmentation")
    prob: float = setting(0.4, "probability of replacing each word", "augmentation")
    top_k: int = setting(15, "candidates per word", "augmentation")
    seed: int = setting(42, "fixes the variants", "augmentation")
    output: str | None = setting(None, "TSV file to write (refused if it exists unless --overwrite)", "output",
                                 required=True)
    overwrite: bool = overwrite_file()

    def check(self) -> None:
        super().check()
        if self.n_aug < 0 or not 0 <= self.prob <= 1 or self.top_k < 1:
            raise UserError("--n-aug must be >= 0, --prob in [0, 1], --top-k >= 1")


@dataclass
class ExperimentConfig(JobConfig):
    """A grid of jobs from a YAML file; tables and plots."""
    job: typing.ClassVar[str] = "experiment"
    config: str | None = setting(None, "experiment YAML (see src/sparsebert/research/experiments/)", "grid", positional=True)
    only: str | None = setting(None, "run only these variants or jobs (names as --dry-run lists them; "
                                     "comma-separated): seed by seed, within a seed in this order", "grid")
    tasks: str | None = setting(None, "run only jobs of these teachers (comma-separated), in this order (with "
                                      "--only: within each seed)", "grid")
    until: str | None = setting(None, "start no job that the committed records of like jobs say would "
                                      "still run then (a lane's end; a job no record sizes is started)", "grid",
                                  metavar="HH:MM")
    dry_run: bool = setting(False, "list the jobs and whether they are done", "grid")
    collect: bool = setting(False, "run nothing; gather finished jobs into the results", "grid")
