"""GLUE metrics and macro-F1, named as the rest of the project reports them."""

from __future__ import annotations

import numpy as np
from scipy import stats


def accuracy(labels, preds) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(preds)))


def f1(labels, preds, positive: int = 1) -> float:
    """F1 of the positive class (label 1, as GLUE reports it for MRPC and QQP, unless another is named)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    tp = np.sum((preds == positive) & (labels == positive))
    fp = np.sum((preds == positive) & (labels != positive))
    fn = np.sum((preds != positive) & (labels == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def f1_macro(labels, preds) -> float:
    """The unweighted mean of each class's F1 over the classes present in the labels or the predictions."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    scores = []
    for c in np.union1d(labels, preds):
        tp = np.sum((preds == c) & (labels == c))
        scores.append(2 * tp / (np.sum(preds == c) + np.sum(labels == c)))
    return float(np.mean(scores))


def matthews_corr(labels, preds) -> float:
    labels, preds = np.asarray(labels), np.asarray(preds)
    tp = float(np.sum((preds == 1) & (labels == 1)))
    tn = float(np.sum((preds == 0) & (labels == 0)))
    fp = float(np.sum((preds == 1) & (labels == 0)))
    fn = float(np.sum((preds == 0) & (labels == 1)))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    # A constant predictor has an undefined correlation; GLUE (and scikit-learn) report 0.
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(labels, preds) -> float:
    return float(stats.pearsonr(np.asarray(labels, float), np.asarray(preds, float)).statistic)


def spearman(labels, preds) -> float:
    return float(stats.spearmanr(np.asarray(labels, float), np.asarray(preds, float)).statistic)


METRICS = {"accuracy": accuracy, "f1": f1, "f1_macro": f1_macro, "matthews_corr": matthews_corr,
           "pearson": pearson, "spearman": spearman}


def compute_metrics(task, labels, predictions) -> dict[str, float]:
    """predictions: class indices, or scores for a regression task."""
    return {name: f1(labels, predictions, task.positive) if name == "f1" else METRICS[name](labels, predictions)
            for name in task.metrics}
