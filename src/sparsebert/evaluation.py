"""Dev-set predictions and metrics."""

from __future__ import annotations

import torch

from .data import Encoded, eval_batches
from .metrics import compute_metrics


@torch.no_grad()
def predict_logits(model, data: Encoded, batch_size: int = 64, device=None) -> torch.Tensor:
    """Logits in the data's own order."""
    was_training = model.training
    model.eval()
    device = device or getattr(model, "device", None) or next(model.parameters()).device
    logits = torch.empty(len(data), model.config.num_labels)
    for batch in eval_batches(data, batch_size):
        inputs = {k: batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")}
        logits[batch["index"]] = model(**inputs).logits.float().cpu()
    model.train(was_training)
    return logits


def predictions_from_logits(task, logits: torch.Tensor):
    return logits[:, 0].numpy() if task.is_regression else logits.argmax(-1).numpy()


def evaluate(model, task, data: Encoded, batch_size: int = 64) -> dict[str, float]:
    logits = predict_logits(model, data, batch_size)
    return compute_metrics(task, data.labels.numpy(), predictions_from_logits(task, logits))
