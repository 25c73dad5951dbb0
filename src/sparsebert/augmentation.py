"""TinyBERT's data augmentation, with an offline fallback (METHOD.md).

Each word is replaced with probability p by one of its K candidates. A one-piece word takes the
masked-LM's top-K predictions when the model has a masked-LM head; otherwise (the embedded MiniLM
has none, and no GloVe can be fetched offline) every word takes its K nearest neighbours, by cosine,
in the model's own input-embedding matrix, a word's vector being the mean of its pieces' vectors.
Candidates are whole vocabulary words: no special tokens, no `##` fragments, no punctuation.
"""

from __future__ import annotations

import random
import re

import torch
import torch.nn.functional as F

WORD = re.compile(r"^[A-Za-z]+$")


def vocabulary_words(tokenizer) -> list[str]:
    special = set(tokenizer.all_special_tokens)
    return sorted(w for w in tokenizer.get_vocab() if WORD.match(w) and w not in special and len(w) > 1)


class EmbeddingNeighbours:
    """Nearest vocabulary words in the input-embedding space, computed for all words at once."""

    def __init__(self, tokenizer, embeddings: torch.Tensor, top_k: int):
        self.tokenizer, self.top_k = tokenizer, top_k
        self.embeddings = F.normalize(embeddings.float(), dim=-1)
        self.words = vocabulary_words(tokenizer)
        vocab = tokenizer.get_vocab()
        self.word_vectors = self.embeddings[[vocab[w] for w in self.words]]

    def vector(self, word: str) -> torch.Tensor:
        ids = self.tokenizer(word.lower(), add_special_tokens=False)["input_ids"]
        return F.normalize(self.embeddings[ids].mean(0), dim=-1)

    def candidates(self, words: list[str], chunk: int = 2048) -> dict[str, list[str]]:
        unique = sorted({w.lower() for w in words})
        result = {}
        for start in range(0, len(unique), chunk):
            part = unique[start:start + chunk]
            sims = torch.stack([self.vector(w) for w in part]) @ self.word_vectors.T
            top = sims.topk(self.top_k + 1, dim=-1).indices
            for word, row in zip(part, top.tolist()):
                result[word] = [self.words[i] for i in row if self.words[i] != word][:self.top_k]
        return result


class MaskedLMCandidates:
    """Top-K masked-LM predictions for one-piece words, in their sentence."""

    def __init__(self, tokenizer, mlm, top_k: int):
        self.tokenizer, self.mlm, self.top_k = tokenizer, mlm.eval(), top_k
        vocab = tokenizer.get_vocab()
        allowed = torch.zeros(len(vocab), dtype=torch.bool)
        allowed[[vocab[w] for w in vocabulary_words(tokenizer)]] = True
        self.allowed = allowed

    @torch.no_grad()
    def for_sentence(self, words: list[str], positions: list[int]) -> dict[int, list[str]]:
        if not positions:
            return {}
        masked = [" ".join(self.tokenizer.mask_token if i == p else w for i, w in enumerate(words)) for p in positions]
        batch = self.tokenizer(masked, return_tensors="pt", padding=True, truncation=True, max_length=128)
        logits = self.mlm(**batch).logits
        where = batch["input_ids"] == self.tokenizer.mask_token_id
        scores = logits[where].masked_fill(~self.allowed[: logits.size(-1)], float("-inf"))
        top = scores.topk(self.top_k + 1, dim=-1).indices.tolist()
        out = {}
        for p, row in zip(positions, top):
            words_k = [self.tokenizer.convert_ids_to_tokens(i) for i in row]
            out[p] = [w for w in words_k if w != words[p].lower()][:self.top_k]
        return out


def match_case(candidate: str, original: str) -> str:
    if original.isupper() and len(original) > 1:
        return candidate.upper()
    return candidate.capitalize() if original[:1].isupper() else candidate


class Augmenter:
    def __init__(self, tokenizer, neighbours: EmbeddingNeighbours, mlm: MaskedLMCandidates | None,
                 prob: float, seed: int):
        self.tokenizer, self.neighbours, self.mlm = tokenizer, neighbours, mlm
        self.prob, self.rng = prob, random.Random(seed)
        self.cache: dict[str, list[str]] = {}

    def prepare(self, texts: list[str]) -> None:
        """Neighbour candidates of every word in `texts`, in one vectorised pass."""
        words = [w for t in texts for w in t.split() if WORD.match(w)]
        self.cache = self.neighbours.candidates(words)

    def variants(self, text: str, n: int) -> list[str]:
        words = text.split(" ")
        choices: dict[int, list[str]] = {}
        one_piece = []
        for i, w in enumerate(words):
            if not WORD.match(w):
                continue
            if self.mlm is not None and len(self.tokenizer.tokenize(w)) == 1:
                one_piece.append(i)
            else:
                choices[i] = self.cache.get(w.lower(), [])
        if self.mlm is not None:
            choices.update(self.mlm.for_sentence(words, one_piece))
        out = []
        for _ in range(n):
            new = list(words)
            for i, candidates in choices.items():
                if candidates and self.rng.random() < self.prob:
                    new[i] = match_case(self.rng.choice(candidates), words[i])
            out.append(" ".join(new))
        return out
