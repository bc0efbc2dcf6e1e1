"""Small shared builders for tests: a tiny demo config, its tokenizer and data."""
from __future__ import annotations

import jax
import ml_collections

from configs import common
from input_pipeline import pipeline, sources
from keepfit_jax import tokenizer as tokenizer_lib
from keepfit_jax.models.keepfit import KeepFITConfig


def tiny_config(modality: str = "cfp", **overrides) -> ml_collections.ConfigDict:
  """The demo config shrunk further: 64 px, batches of 16, a few hundred records."""
  c = common.get_config(modality, "demo")
  c.image_size = 64
  c.train.batch_size = 16
  c.train.elite_batch_size = 16
  c.train.total_steps = 4
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.train.eval_every = 4
  c.data.synthetic = dict(train_records=200, elite_records=64, heldout_per_class=4, heldout_pairs=16)
  c.data.num_threads = 1
  c.eval.batch_size = 16
  for key, value in overrides.items():
    target = c
    *path, last = key.split(".")
    for p in path:
      target = target[p]
    target[last] = value
  return c


def text_encoder(config, tmp_dir: str):
  tokenizer_lib.write_vocab(sources.synthetic_corpus(config, num_captions=50), tmp_dir)
  return tokenizer_lib.TextEncoder(tokenizer_lib.load_tokenizer(tmp_dir, lower_case=True), config.text.max_len)


def dataset(config, encoder, *, seed=None, process_index=0, process_count=1):
  return pipeline.step_dataset(sources.build_streams(config), encoder, image_size=config.image_size,
                               batch_size=config.train.batch_size, elite_batch_size=config.train.elite_batch_size,
                               seed=config.seed if seed is None else seed, augment=config.data.augment,
                               process_index=process_index, process_count=process_count)


def model_config(config, encoder) -> KeepFITConfig:
  return KeepFITConfig.from_config(config.model, image_size=config.image_size, vocab_size=encoder.vocab_size)


def global_batch(batch, shardings):
  return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, x, x.shape), batch, shardings)
