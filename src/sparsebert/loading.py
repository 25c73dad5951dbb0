"""The one loader of a model folder, whichever kind it is: a Hugging Face folder (`models.py`) or a compressed
export (`sparse/format.py`), for training, for PyTorch inference or for the sparse engine. Jobs load through
here, so each takes every kind of folder it can use and refuses the others with one line that says why.
"""

from __future__ import annotations

from pathlib import Path

from .embedding import not_a_sentence_model, sentence_length
from .errors import UserError
from .models import (load_classifier, load_for_inference, load_hf_encoder, load_hf_model, load_input_embeddings,
                     load_masked_lm, load_tokenizer, read_config, resolve_model_path, task_head_settings)
from .sparse.engine import SparseModel, from_hf_model
from .sparse.format import SPARSE_CONFIG, SPARSE_WEIGHTS, is_exported, load_exported, read_export
from .tasks import Task

__all__ = ["load_config", "load_dense", "load_encoder", "load_model", "load_sparse", "load_to_export",
           "load_word_sources"]


def refuse_unfinished_export(path: str) -> None:
    if (Path(path) / SPARSE_WEIGHTS).is_file() and not (Path(path) / SPARSE_CONFIG).is_file():
        raise UserError(f"{path}: an export that was cut off before it finished ({SPARSE_CONFIG}, written last, is "
                        "missing); run sparsebert export again")


def load_config(path: str):
    """A resolved folder's config.json; an export cut off before its last file was written is refused."""
    refuse_unfinished_export(path)
    return read_config(path)


def refuse_export(path: str,
                  why: str = "a compressed export is for inference; train from a Hugging Face folder") -> None:
    """An export where a job needs the Hugging Face folder: `why` says what to give instead."""
    if is_exported(path):
        raise UserError(f"{path}: {why}")


def load_model(name_or_path: str | None, task: Task, *, new_head: bool):
    """An encoder with a head for `task`. new_head=True gives a pre-trained encoder a fresh task head (students,
    fine-tuning; Hugging Face folders only); new_head=False expects a model fine-tuned for `task` (teachers,
    evaluation; an export opens as its dense-form PyTorch model) and checks that its head fits.
    Returns (model, tokenizer, path)."""
    path = resolve_model_path(name_or_path)
    config = load_config(path)
    if new_head:
        refuse_export(path)
    elif is_exported(path):
        task_head_settings(config, path, task, new_head=False)
        return load_exported(path), load_tokenizer(path), path
    return load_hf_model(path, config, task, new_head=new_head)


def load_encoder(path: str):
    """A resolved Hugging Face folder's encoder alone, to train as a sentence embedder; a fine-tuned classifier and
    an export are refused."""
    refuse_unfinished_export(path)
    refuse_export(path)
    return load_hf_encoder(path)


def load_to_export(path: str):
    """A resolved Hugging Face folder to export: its classifier, or its encoder alone (a sentence-embedding model);
    an export is refused, being one already."""
    refuse_unfinished_export(path)
    refuse_export(path, "already a compressed export; export the Hugging Face folder it was made from")
    return load_for_inference(path)


def load_word_sources(path: str):
    """What `augment` draws replacement words from, in a resolved Hugging Face folder: its masked-LM (None where
    the checkpoint has no such head) and its input embeddings; an export, whose embeddings are compressed, is
    refused."""
    refuse_unfinished_export(path)
    refuse_export(path, "a compressed export; augment reads the Hugging Face folder it was made from")
    mlm = load_masked_lm(path)
    return mlm, mlm.get_input_embeddings().weight.detach() if mlm is not None else load_input_embeddings(path)


def load_dense(path: str):
    """A resolved folder's fine-tuned classifier as a PyTorch model: an export as its dense form (zeros where
    pruned), else the Hugging Face folder's classifier."""
    refuse_unfinished_export(path)
    return load_exported(path) if is_exported(path) else load_classifier(path)


def load_sparse(path=None, values: str = "fp32", engine: str = "auto") -> SparseModel:
    """A model folder on the sparse engine: an export (`sparsebert export`) as stored, or a fine-tuned or
    pruned Hugging Face folder, converted on loading (its values as `values`: fp32 or int8).

    engine: "auto" runs each matrix the faster way here, "sparse" forces the kernel, "dense" the BLAS product.
    """
    path = resolve_model_path(None if path is None else str(path))  # None: the embedded all-MiniLM-L6-v2
    config = load_config(path)
    tokenizer = load_tokenizer(path)
    if is_exported(path):
        tensors, matrices = read_export(path)
        model = SparseModel(config, tensors, matrices, tokenizer, engine)
    else:
        model = from_hf_model(load_for_inference(path), tokenizer, values, engine)
    model.max_seq_length = sentence_length(Path(path), model.max_seq_length)
    model.encode_refusal = not_a_sentence_model(Path(path))
    return model
