import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from sparsebert.metrics import accuracy, compute_metrics, f1, f1_macro, matthews_corr, pearson, spearman
from sparsebert.tasks import get_task


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels, preds = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert accuracy(labels, preds) == pytest.approx(skm.accuracy_score(labels, preds))
    assert f1(labels, preds) == pytest.approx(skm.f1_score(labels, preds))
    assert matthews_corr(labels, preds) == pytest.approx(skm.matthews_corrcoef(labels, preds))
    assert f1(labels, preds, positive=0) == pytest.approx(skm.f1_score(labels, preds, pos_label=0))


@pytest.mark.parametrize("seed", range(3))
def test_macro_f1_matches_scikit_learn_with_several_classes(seed):
    rng = np.random.default_rng(seed)
    labels, preds = rng.integers(0, 4, 150), rng.integers(0, 5, 150)  # a class only ever predicted, too
    assert f1_macro(labels, preds) == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    assert f1_macro(labels, np.zeros(150, int)) == pytest.approx(
        skm.f1_score(labels, np.zeros(150, int), average="macro", zero_division=0))


def test_degenerate_predictions_match_scikit_learn():
    labels = np.array([0, 1, 1, 0, 1])
    for preds in (np.ones(5, int), np.zeros(5, int)):
        assert matthews_corr(labels, preds) == pytest.approx(skm.matthews_corrcoef(labels, preds))
        assert f1(labels, preds) == pytest.approx(skm.f1_score(labels, preds, zero_division=0))


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 100)
    pred = gold + rng.normal(0, 1, 100)
    assert pearson(gold, pred) == pytest.approx(stats.pearsonr(gold, pred)[0])
    assert spearman(gold, pred) == pytest.approx(stats.spearmanr(gold, pred)[0])


def test_majority_class_on_mrpc_dev_scores_what_method_md_says():
    # METHOD.md: predicting "paraphrase" for every MRPC dev pair scores F1 0.812 / accuracy 0.684
    from sparsebert.tasks import load_split
    labels = np.array([e.label for e in load_split(get_task("mrpc"), None, "dev")])
    scores = compute_metrics(get_task("mrpc"), labels, np.ones_like(labels))
    assert round(scores["f1"], 3) == 0.812 and round(scores["accuracy"], 3) == 0.684
