"""Evaluation metrics of the FLAIR / KeepFIT protocol (METHOD.md §6), in NumPy.

ACA: mean per-class recall (balanced accuracy). AUC: one-vs-rest ROC AUC averaged over the
classes present. F1: macro F1. Kappa: Cohen's kappa with quadratic weights. Retrieval: R@K.
"""
from __future__ import annotations

import numpy as np


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
  cm = np.zeros((num_classes, num_classes), np.float64)
  np.add.at(cm, (y_true, y_pred), 1)
  return cm


def aca(y_true, y_pred, num_classes: int) -> float:
  cm = _confusion(np.asarray(y_true), np.asarray(y_pred), num_classes)
  support = cm.sum(1)
  present = support > 0
  return float(np.mean(np.diag(cm)[present] / support[present]))


def macro_f1(y_true, y_pred, num_classes: int) -> float:
  """Mean F1 over classes that occur in y_true or y_pred (an F1 of 0 where precision+recall is 0)."""
  cm = _confusion(np.asarray(y_true), np.asarray(y_pred), num_classes)
  tp = np.diag(cm)
  pred, true = cm.sum(0), cm.sum(1)
  present = (pred + true) > 0
  denom = pred + true
  f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)
  return float(np.mean(f1[present]))


def quadratic_kappa(y_true, y_pred, num_classes: int) -> float:
  cm = _confusion(np.asarray(y_true), np.asarray(y_pred), num_classes)
  n = cm.sum()
  expected = np.outer(cm.sum(1), cm.sum(0)) / n
  idx = np.arange(num_classes)
  w = (idx[:, None] - idx[None, :]) ** 2 / max((num_classes - 1) ** 2, 1)
  denom = np.sum(w * expected)
  return float(1.0 - np.sum(w * cm) / denom) if denom > 0 else 0.0


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
  """ROC AUC by the rank-sum (Mann-Whitney U) statistic, ties counted as one half."""
  y = np.asarray(y).astype(bool)
  pos, neg = int(y.sum()), int((~y).sum())
  if pos == 0 or neg == 0:
    return float("nan")
  order = np.argsort(score, kind="mergesort")
  s = np.asarray(score)[order]
  ranks = np.empty(len(s), np.float64)
  i = 0
  while i < len(s):             # average ranks over ties
    j = i
    while j + 1 < len(s) and s[j + 1] == s[i]:
      j += 1
    ranks[i:j + 1] = (i + j) / 2 + 1
    i = j + 1
  r = np.empty_like(ranks)
  r[order] = ranks
  return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auc_ovr(y_true, probs) -> float:
  """Mean one-vs-rest AUC over the classes present in y_true."""
  y_true, probs = np.asarray(y_true), np.asarray(probs)
  aucs = [binary_auc(y_true == k, probs[:, k]) for k in range(probs.shape[1]) if np.any(y_true == k)]
  aucs = [a for a in aucs if not np.isnan(a)]
  return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(y_true, probs) -> dict[str, float]:
  probs = np.asarray(probs)
  num_classes = probs.shape[1]
  y_pred = probs.argmax(1)
  return {"aca": aca(y_true, y_pred, num_classes), "auc": auc_ovr(y_true, probs),
          "f1": macro_f1(y_true, y_pred, num_classes), "kappa": quadratic_kappa(y_true, y_pred, num_classes),
          "accuracy": float(np.mean(np.asarray(y_true) == y_pred))}


def recall_at_k(similarity: np.ndarray, ks=(1, 5, 10)) -> dict[int, float]:
  """similarity[i, j] between query i and candidate j; the match of query i is candidate i.

  Ties with the true match count against it (a rank is 1 + the number of candidates scoring strictly higher,
  plus those scoring equal that come earlier), so a constant similarity scores chance, not 1.
  """
  sim = np.asarray(similarity)
  true = np.diag(sim)[:, None]
  higher = np.sum(sim > true, axis=1)
  earlier_ties = np.array([np.sum(sim[i, :i] == sim[i, i]) for i in range(sim.shape[0])])
  rank = higher + earlier_ties
  return {k: float(np.mean(rank < k)) for k in ks}
