"""Distillation: layer mapping, the loss terms of METHOD.md, and a cache of the teacher's outputs.

Student layer m learns from teacher layer g(m) = k*m (the embedding output is layer 0 on both sides).
The terms: hidden-state MSE (embedding output included, through a learned projection W_h where the
hidden sizes differ), the attention term (by default the KL of the attention distributions; the paper's MSE of
the scores before the softmax, or the MSE of the probabilities, with --attention-loss), and soft cross-entropy on the
predictions (MSE to the gold score for regression, as in the reference implementation).
Each term is a mean over an example's real tokens, then over the examples: padding does not change
it, and a batch split over several processes gives the same loss as the whole batch in one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from .data import Encoded, collate
from .errors import UserError


SCORES_ATTENTION = "sparsebert_scores"
# Attention scores before the softmax, for the attention distillation loss (METHOD.md). HF's
# `output_attentions` returns probabilities; this implementation records the raw scores instead,
# inside `record_attention_scores()`, and otherwise computes exactly what eager attention does.
_recorded_scores: list[torch.Tensor] | None = None


def _scores_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if _recorded_scores is not None:
        _recorded_scores.append(scores)
    weights = scores if attention_mask is None else scores + attention_mask
    weights = torch.nn.functional.softmax(weights, dim=-1)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(SCORES_ATTENTION, _scores_attention)
AttentionMaskInterface.register(SCORES_ATTENTION, eager_mask)


@contextlib.contextmanager
def record_attention_scores():
    """Collects each layer's (batch, heads, query, key) scores during forwards run inside the block.

    The model must use the scores attention: `model.set_attn_implementation(SCORES_ATTENTION)`.
    """
    global _recorded_scores
    previous, _recorded_scores = _recorded_scores, []
    try:
        yield _recorded_scores
    finally:
        _recorded_scores = previous


def layer_mapping(student_layers: int, teacher_layers: int) -> list[int]:
    """g(m) for m = 0..M: the teacher layer (hidden-state index) each student layer learns from."""
    if teacher_layers % student_layers:
        raise UserError(f"the teacher has {teacher_layers} layers, not a multiple of the student's "
                        f"{student_layers}; layer m of the student learns from layer k*m of the teacher")
    k = teacher_layers // student_layers
    return [k * m for m in range(student_layers + 1)]


@dataclass
class Outputs:
    logits: torch.Tensor | None  # (B, C); None for an encoder alone (sentence embeddings)
    hidden: list[torch.Tensor] | None = None  # M+1 tensors (B, T, H): embedding output, then each layer
    scores: list[torch.Tensor] | None = None  # M tensors (B, heads, T, T), before the softmax


def forward_with_internals(model, inputs: dict, layers: list[int] | None = None) -> Outputs:
    """Runs `model` (set to the scores attention) and keeps what distillation needs.

    layers: hidden-state indices to keep (the teacher keeps only its mapped layers); None keeps all.
    """
    with record_attention_scores() as scores:
        out = model(**inputs, output_hidden_states=True)
    hidden = list(out.hidden_states)
    if layers is not None:
        hidden = [hidden[i] for i in layers]
        scores = [scores[i - 1] for i in layers[1:]]
    return Outputs(getattr(out, "logits", None), hidden, list(scores))  # an encoder alone has no logits


def _per_example_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each example's real entries (mask broadcasts to values), then over examples."""
    dims = tuple(range(1, values.dim()))
    total = (values * mask).sum(dims)
    count = mask.expand_as(values).sum(dims).clamp(min=1)
    return (total / count).mean()


class DistillationLoss(torch.nn.Module):
    """The summed distillation loss; `terms` returns each term for logging.

    attention: 'scores' (the paper), 'probs' (MSE of probabilities, what HF's output_attentions gives),
    or 'kl' (teacher-to-student KL of the attention distributions).
    hidden_norm: 'none' (the paper) or 'teacher-var' (each layer's MSE divided by the teacher's
    variance on that layer, `hidden_variance`, so layers with large activations do not dominate).
    """

    def __init__(self, student_hidden: int, teacher_hidden: int, *, mode: str = "full", temperature: float = 1.0,
                 regression: bool = False, weights=(1.0, 1.0, 1.0), attention: str = "scores",
                 hidden_norm: str = "none", hidden_variance: list[float] | None = None, gold_weight: float = 0.0):
        super().__init__()
        self.mode, self.temperature, self.regression = mode, temperature, regression
        self.gold_weight = gold_weight
        self.weights, self.attention = tuple(weights), attention
        if hidden_norm == "teacher-var" and hidden_variance is None:
            raise ValueError("hidden_norm 'teacher-var' needs the teacher's per-layer hidden_variance")
        self.hidden_variance = hidden_variance if hidden_norm == "teacher-var" else None
        # W_h: only where the sizes differ (identity otherwise, METHOD.md)
        self.projection = (torch.nn.Linear(student_hidden, teacher_hidden, bias=False)
                           if student_hidden != teacher_hidden else None)

    def prediction(self, student: Outputs, teacher: Outputs, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(student.logits[:, 0], labels)
        t = self.temperature
        soft = -(F.softmax(teacher.logits / t, -1) * F.log_softmax(student.logits / t, -1)).sum(-1).mean()
        if not self.gold_weight:
            return soft
        return (1 - self.gold_weight) * soft + self.gold_weight * F.cross_entropy(student.logits, labels)

    def hidden(self, student: Outputs, teacher: Outputs, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, :, None].float()
        total = 0.0
        for layer, (hs, ht) in enumerate(zip(student.hidden, teacher.hidden)):
            hs = self.projection(hs) if self.projection is not None else hs
            term = _per_example_mean((hs - ht.float()) ** 2, m)
            if self.hidden_variance is not None:
                term = term / self.hidden_variance[layer]
            total = total + term
        return total

    def attention_term(self, student: Outputs, teacher: Outputs, mask: torch.Tensor) -> torch.Tensor:
        keys = mask[:, None, None, :].bool()
        pairs = (mask[:, None, :, None] * mask[:, None, None, :]).float()
        total = 0.0
        for ss, st in zip(student.scores, teacher.scores):
            st = st.float()
            if self.attention == "scores":
                total = total + _per_example_mean((ss - st) ** 2, pairs)
                continue
            log_ps = F.log_softmax(ss.masked_fill(~keys, -1e4), -1)
            log_pt = F.log_softmax(st.masked_fill(~keys, -1e4), -1)
            if self.attention == "probs":
                total = total + _per_example_mean((log_ps.exp() - log_pt.exp()) ** 2, pairs)
            else:  # kl per query row, averaged over real query positions and heads
                kl = (log_pt.exp() * (log_pt - log_ps) * pairs).sum(-1)
                total = total + _per_example_mean(kl, mask[:, None, :].float())
        return total

    def terms(self, student: Outputs, teacher: Outputs, labels: torch.Tensor, mask: torch.Tensor) -> dict:
        terms = {"prediction": self.prediction(student, teacher, labels)}
        if self.mode == "full":
            terms["attention"] = self.attention_term(student, teacher, mask)
            terms["hidden"] = self.hidden(student, teacher, mask)
        return terms

    def combine(self, terms: dict) -> torch.Tensor:
        w_att, w_hid, w_pred = self.weights
        weight = {"attention": w_att, "hidden": w_hid, "prediction": w_pred}
        return sum(weight[k] * v for k, v in terms.items())


class TeacherCache:
    """The teacher's outputs on a fixed training set, computed once and reused every epoch.

    The teacher is in eval mode, so its outputs are deterministic. Each example's real tokens are
    stored in fp16 (logits in fp32); `batch` pads them back to the batch's width.
    """

    def __init__(self, teacher, data: Encoded, layers: list[int], keep_internals: bool, batch_size: int = 64):
        self.keep_internals = keep_internals
        self.logits = torch.empty(len(data), teacher.config.num_labels)
        self.hidden: list[torch.Tensor | None] = [None] * len(data)
        self.scores: list[torch.Tensor | None] = [None] * len(data)
        device = next(teacher.parameters()).device
        order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), desc="caching teacher outputs", unit="batch"):
                indices = order[start:start + batch_size]
                batch = collate(data, indices)
                inputs = {k: batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")}
                if keep_internals:
                    out = forward_with_internals(teacher, inputs, layers)
                else:
                    out = Outputs(teacher(**inputs).logits)
                self.logits[indices] = out.logits.float().cpu()
                if keep_internals:
                    for row, i in enumerate(indices):
                        n = len(data.input_ids[i])
                        self.hidden[i] = torch.stack([h[row, :n] for h in out.hidden]).half().cpu()
                        self.scores[i] = torch.stack([s[row, :, :n, :n] for s in out.scores]).half().cpu()

    def batch(self, indices: list[int], width: int, device) -> Outputs:
        logits = self.logits[indices].to(device)
        if not self.keep_internals:
            return Outputs(logits)
        first_h, first_s = self.hidden[indices[0]], self.scores[indices[0]]
        hidden = torch.zeros(len(indices), first_h.size(0), width, first_h.size(-1), dtype=torch.float16)
        scores = torch.zeros(len(indices), first_s.size(0), first_s.size(1), width, width, dtype=torch.float16)
        for row, i in enumerate(indices):
            n = self.hidden[i].size(1)
            hidden[row, :, :n] = self.hidden[i]
            scores[row, :, :, :n, :n] = self.scores[i]
        hidden, scores = hidden.to(device), scores.to(device)
        return Outputs(logits, list(hidden.unbind(1)), list(scores.unbind(1)))

    @staticmethod
    def estimate_bytes(data: Encoded, layers: list[int], heads: int, hidden_size: int) -> int:
        lengths = torch.tensor(data.lengths(), dtype=torch.float64)
        per_token = len(layers) * hidden_size * 2
        per_pair = (len(layers) - 1) * heads * 2
        return int((lengths * per_token + lengths ** 2 * per_pair).sum())


@torch.no_grad()
def teacher_hidden_variance(teacher, data: Encoded, layers: list[int], examples: int = 64) -> list[float]:
    """Per mapped layer, the variance of the teacher's hidden states over the real tokens of the first
    `examples` training examples: a fixed scale, the same for every batch and every process."""
    indices = list(range(min(examples, len(data))))
    batch = collate(data, indices)
    device = next(teacher.parameters()).device
    out = forward_with_internals(teacher, {k: batch[k].to(device) for k in
                                           ("input_ids", "token_type_ids", "attention_mask")}, layers)
    real = batch["attention_mask"].bool().to(device)
    return [float(h[real].float().var()) + 1e-6 for h in out.hidden]


def set_scores_attention(model) -> None:
    model.set_attn_implementation(SCORES_ATTENTION)


def frozen_teacher(teacher, device):
    """The teacher as distillation reads it: on `device`, without dropout, its attention scores exposed and its
    weights frozen."""
    teacher.to(device).eval()
    set_scores_attention(teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
