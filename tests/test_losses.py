"""The four KeepFIT V2 losses against NumPy references written from METHOD.md §4."""
import numpy as np
import pytest

from keepfit_jax import losses


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_soft_ce(logits, targets):
  return float(np.mean(-(targets * np_log_softmax(logits)).sum(-1)))


def np_label_aware(v, t, labels, scale):
  """FLAIR: logits = s T V^T; G_ij = 1[c_i=c_j] / #class(c_i); 0.5 (CE(logits, G) + CE(logits^T, G))."""
  logits = scale * t @ v.T
  g = np.zeros((len(labels), len(labels)))
  for i in range(len(labels)):
    for j in range(len(labels)):
      g[i, j] = float(labels[i] == labels[j])
  g = g / g.sum(1, keepdims=True)
  return 0.5 * (np_soft_ce(logits, g) + np_soft_ce(logits.T, g))


def unit(rng, n, d):
  x = rng.normal(size=(n, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_label_aware_contrastive_matches_numpy_with_repeated_classes():
  rng = np.random.default_rng(0)
  v, t = unit(rng, 12, 16), unit(rng, 12, 16)
  labels = np.array([0, 1, 1, 2, 0, 0, 3, 1, 2, 2, 4, 0])
  got = float(losses.label_aware_contrastive_loss(v, t, labels, 14.3))
  assert got == pytest.approx(np_label_aware(v, t, labels, 14.3), rel=1e-5)


def test_label_aware_contrastive_with_distinct_labels_is_clip_loss():
  rng = np.random.default_rng(1)
  v, t = unit(rng, 8, 4), unit(rng, 8, 4)
  a = float(losses.label_aware_contrastive_loss(v, t, np.arange(8), 10.0))
  b = float(losses.clip_loss(v, t, 10.0))
  logits = 10.0 * t @ v.T
  ref = 0.5 * (np_soft_ce(logits, np.eye(8)) + np_soft_ce(logits.T, np.eye(8)))
  assert a == pytest.approx(ref, rel=1e-5) and b == pytest.approx(ref, rel=1e-5)


def test_per_device_groups_average_blockwise_losses():
  rng = np.random.default_rng(2)
  v, t = unit(rng, 12, 8), unit(rng, 12, 8)
  labels = rng.integers(0, 3, size=12)
  ref = np.mean([np_label_aware(v[k:k + 4], t[k:k + 4], labels[k:k + 4], 5.0) for k in (0, 4, 8)])
  assert float(losses.label_aware_contrastive_loss(v, t, labels, 5.0, groups=3)) == pytest.approx(ref, rel=1e-5)
  with pytest.raises(ValueError, match="cannot be split"):
    losses.label_aware_contrastive_loss(v, t, labels, 5.0, groups=5)


def test_knowledge_reference_loss_is_elementwise_mse():
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  assert float(losses.knowledge_reference_loss(a, b)) == pytest.approx(np.mean((a - b) ** 2), rel=1e-5)


def test_caption_loss_ignores_padding_and_shifts_by_one():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  tokens = np.array([[2, 4, 5, 3, 0], [2, 6, 3, 0, 0]])
  mask = (tokens > 0).astype(np.int32)
  nll, count = 0.0, 0
  for b in range(2):
    for pos in range(4):
      if mask[b, pos + 1]:
        nll -= np_log_softmax(logits[b, pos])[tokens[b, pos + 1]]
        count += 1
  assert count == 5
  assert float(losses.caption_loss(logits, tokens, mask)) == pytest.approx(nll / count, rel=1e-5)
  # Changing the logits at padded positions leaves the loss unchanged.
  logits2 = logits.copy()
  logits2[1, 3:] += 100.0
  assert float(losses.caption_loss(logits2, tokens, mask)) == pytest.approx(nll / count, rel=1e-5)
