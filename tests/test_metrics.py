"""Evaluation metrics against scikit-learn (an independent implementation) and hand-computed values."""
import numpy as np
import pytest
from sklearn import metrics as skm

from keepfit_jax import metrics


@pytest.fixture
def predictions():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 5, size=200)
  logits = rng.normal(size=(200, 5)) + 2.0 * np.eye(5)[y]
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  return y, probs


def test_classification_metrics_match_sklearn(predictions):
  y, probs = predictions
  pred = probs.argmax(1)
  got = metrics.classification_metrics(y, probs)
  assert got["aca"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
  assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
  assert got["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
  assert got["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_binary_auc_counts_ties_as_half():
  # positives {0.5, 0.8}, negatives {0.5, 0.2}: pairs (0.5>0.2)=1, (0.5=0.5)=0.5, (0.8>.5)=1, (0.8>.2)=1 -> 3.5/4
  assert metrics.binary_auc(np.array([1, 1, 0, 0]), np.array([0.5, 0.8, 0.5, 0.2])) == pytest.approx(0.875)


def test_recall_at_k_by_hand():
  sim = np.array([[0.9, 0.1, 0.0],     # query 0: match ranked 1st
                  [0.8, 0.5, 0.9],     # query 1: match ranked 3rd
                  [0.1, 0.9, 0.5]])    # query 2: match ranked 2nd
  assert metrics.recall_at_k(sim, ks=(1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_recall_with_constant_similarity_is_chance_not_perfect():
  r = metrics.recall_at_k(np.zeros((100, 100)), ks=(1, 5, 10))
  assert r == {1: pytest.approx(0.01), 5: pytest.approx(0.05), 10: pytest.approx(0.10)}
