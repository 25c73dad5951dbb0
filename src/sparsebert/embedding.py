"""Sentence embeddings: the pooling sentence-transformers gives all-MiniLM-L6-v2 (the mean of the last layer over
each sentence's real tokens), the sentences an embedder is pruned on, and its quality check: the Spearman
correlation of cosine similarities with STS-B dev's gold scores, unsupervised (nothing is trained on STS-B);
and what a sentence-transformers folder records of its pooling and length, and its files, copied to a model made
from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import Encoded
from .errors import UserError
from .metrics import spearman
from .tasks import get_task, load_split

# The bundled tasks with a training file; every dev set stays out of the training sentences.
SENTENCE_SOURCES = ("MRPC", "RTE", "CoLA", "STS-B", "WNLI")


def mean_pool(last_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean over each sentence's real tokens."""
    m = mask[:, :, None].to(last_hidden.dtype)
    return (last_hidden * m).sum(1) / m.sum(1).clamp(min=1)


def glue_sentences() -> list[str]:
    """The training sentences of the bundled GLUE tasks (both sides of a pair), each once in first-seen order,
    without any sentence of STS-B's dev set (the quality check)."""
    held_out = {text for e in load_split(get_task("sts-b"), None, "dev") for text in (e.text_a, e.text_b)}
    seen: dict[str, None] = {}
    for name in SENTENCE_SOURCES:
        for example in load_split(get_task(name), None, "train"):
            for text in (example.text_a, example.text_b):
                if text and text.strip() and text not in held_out:
                    seen.setdefault(text, None)
    return list(seen)


def encode_sentences(sentences: list[str], tokenizer, max_seq_length: int) -> Encoded:
    out = tokenizer(sentences, truncation=True, max_length=max_seq_length, return_token_type_ids=True)
    return Encoded(out["input_ids"], out["token_type_ids"], torch.zeros(len(sentences)), tokenizer.pad_token_id)


@torch.no_grad()
def embed(model, tokenizer, sentences: list[str], max_seq_length: int, batch_size: int = 64) -> np.ndarray:
    """Normalised mean-pooled embeddings of `sentences` from a Hugging Face encoder, in their order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))  # like lengths together: less padding
    out = np.empty((len(sentences), model.config.hidden_size), np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        enc = tokenizer([sentences[i] for i in rows], padding=True, truncation=True, max_length=max_seq_length,
                        return_tensors="pt").to(device)
        pooled = mean_pool(model(**enc).last_hidden_state.float(), enc["attention_mask"])
        out[rows] = F.normalize(pooled, dim=-1).cpu().numpy()
    model.train(was_training)
    return out


def sts_b_pairs(data_dir=None) -> tuple[list[str], list[str], np.ndarray]:
    pairs = load_split(get_task("sts-b"), data_dir, "dev")
    return [p.text_a for p in pairs], [p.text_b for p in pairs], np.array([p.label for p in pairs], dtype=float)


def sts_b_spearman(encode, data_dir=None) -> float:
    """STS-B dev Spearman of the cosine similarities that `encode` (sentences -> normalised matrix) gives."""
    first, second, gold = sts_b_pairs(data_dir)
    a, b = encode(first), encode(second)
    return spearman(gold, (a * b).sum(1))


def read_settings(path: Path) -> dict:
    try:
        settings = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); restore it from the model it came from") from None
    if not isinstance(settings, dict):
        raise UserError(f"{path}: not a JSON object; restore it from the model it came from")
    return settings


def not_a_sentence_model(folder: Path) -> str | None:
    """Why a folder gives no sentence embeddings, or None: it must record how it pools its tokens, as
    sentence-transformers does; a fine-tuned classifier or a bare encoder, mean-pooled, would give vectors
    nobody trained for similarity."""
    if (folder / "1_Pooling" / "config.json").is_file():
        return None
    return (f"{folder}: not a sentence-embedding model: no 1_Pooling/config.json records how it pools "
            "(sentence-transformers writes one); give a sentence-transformers folder or one that prune-embedder wrote")


def check_sentence_model(folder: Path) -> None:
    if why := not_a_sentence_model(folder):
        raise UserError(why)


def sentence_length(folder: Path, positions: int) -> int:
    """The tokens per sentence `encode` keeps: a sentence-transformers folder's own setting (all-MiniLM-L6-v2:
    256), else all the model's `positions`. Refuses a folder that pools other than by the mean over its tokens,
    which is how `encode` pools."""
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():
        modes = sorted(k for k, v in read_settings(pooling).items() if k.startswith("pooling_mode_") and v is True)
        if modes != ["pooling_mode_mean_tokens"]:
            raise UserError(f"{pooling}: the model pools by {', '.join(modes) or 'nothing'}; the engine's "
                            "embeddings are the mean over the tokens (pooling_mode_mean_tokens)")
    settings = folder / "sentence_bert_config.json"
    if settings.is_file():
        if read_settings(settings).get("do_lower_case"):
            raise UserError(f"{settings}: do_lower_case is true; the engine's encode gives the tokenizer the "
                            "sentences as they are")
        length = read_settings(settings).get("max_seq_length")
        if not isinstance(length, int) or not 1 < length <= positions:
            raise UserError(f"{settings}: max_seq_length {length!r}; give a whole number from 2 to the model's "
                            f"{positions} positions")
        return length
    return positions


# a sentence-transformers folder's own files: the export encodes as the folder does (its max_seq_length)
SENTENCE_TRANSFORMERS_FILES = ("sentence_bert_config.json", "modules.json", "config_sentence_transformers.json",
                               "1_Pooling", "2_Normalize")


def copy_sentence_transformers_files(source: Path, out: Path) -> None:
    """A sentence-transformers folder's own files (pooling, normalisation, max_seq_length), where it has them."""
    for name in SENTENCE_TRANSFORMERS_FILES:
        if (source / name).is_dir():
            shutil.copytree(source / name, out / name, dirs_exist_ok=True)
        elif (source / name).is_file():
            shutil.copy2(source / name, out / name)
