"""KeepFIT/FLAIR layer-mean pooling against NumPy, and v1's padding-included mean independent of fixed padding."""
import jax.numpy as jnp
import numpy as np
from flax import nnx

from keepfit_jax.models.bert import BertConfig, BertModel, layer_mean_pool


def tiny_bert():
  with nnx.use_eager_sharding(False):
    return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=24,
                                max_position_embeddings=32, hidden_dropout=0.0, attention_dropout=0.0),
                     rngs=nnx.Rngs(0))


def batch(pad_to):
  ids = np.zeros((2, pad_to), np.int32)
  ids[0, :3] = [2, 7, 3]
  ids[1, :5] = [2, 9, 11, 13, 3]
  return jnp.asarray(ids), jnp.asarray((ids > 0).astype(np.int32))


def test_pooling_matches_numpy_means_over_layers_1_2_and_last():
  model = tiny_bert()
  ids, mask = batch(5)
  hs = [np.asarray(h) for h in model(ids, mask).hidden_states]
  three = np.stack([hs[1], hs[2], hs[-1]])                       # [3, B, L, H]
  v1 = three.mean(axis=2).mean(axis=0)                           # padded to the longest item (5): FLAIR / v1
  m = np.asarray(mask, np.float32)[None, :, :, None]
  masked = ((three * m).sum(2) / m.sum(2)).mean(0)
  np.testing.assert_allclose(layer_mean_pool(model(ids, mask).hidden_states, mask, include_padding=True), v1,
                             atol=1e-6)
  np.testing.assert_allclose(layer_mean_pool(model(ids, mask).hidden_states, mask), masked, atol=1e-6)


def test_fixed_length_padding_does_not_change_either_pooling():
  model = tiny_bert()
  short_ids, short_mask = batch(5)        # v1: padded to the batch's longest prompt
  long_ids, long_mask = batch(20)         # keepfit_jax: padded to config.text.max_len
  for include_padding in (True, False):
    a = layer_mean_pool(model(short_ids, short_mask).hidden_states, short_mask, include_padding=include_padding)
    b = layer_mean_pool(model(long_ids, long_mask).hidden_states, long_mask, include_padding=include_padding)
    np.testing.assert_allclose(a, b, atol=1e-5)
