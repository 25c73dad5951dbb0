"""Sentence embeddings: the pooling sentence-transformers gives all-MiniLM-L6-v2 (the mean of the last layer over
each sentence's real tokens), the sentences an embedder is pruned on, and its quality check: the Spearman
correlation of cosine similarities with STS-B dev's gold scores, unsupervised (nothing is trained on STS-B)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import Encoded
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
