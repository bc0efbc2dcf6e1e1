"""WordPiece tokenization (BERT), and a vocabulary built from a corpus for the synthetic demo.

Real runs load the text tower's own tokenizer (e.g. Bio_ClinicalBERT's vocab.txt). The demo
writes a WordPiece vocabulary covering its synthetic corpus into WORKDIR/tokenizer at the first
start (every word of the corpus, plus single characters and their '##' continuations so that any
unseen word still tokenizes), and reloads it from there on resume.
"""
from __future__ import annotations

import os
import string
from typing import Iterable, Sequence

import numpy as np
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import BertTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_vocab(corpus: Iterable[str]) -> list[str]:
  """Sorted whole-word vocabulary of a lower-cased corpus, with character fallbacks."""
  pre = BertPreTokenizer()
  words = set()
  for text in corpus:
    words.update(w for w, _ in pre.pre_tokenize_str(text.lower()))
  chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
  vocab = list(SPECIAL_TOKENS)
  for token in chars + [f"##{c}" for c in chars] + sorted(words):
    if token not in vocab:
      vocab.append(token)
  return vocab


def write_vocab(corpus: Iterable[str], directory: str) -> str:
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "vocab.txt")
  tmp = f"{path}.{os.getpid()}.tmp"      # several processes of one run may write the same (identical) file
  with open(tmp, "w") as f:
    f.write("\n".join(build_vocab(corpus)) + "\n")
  os.replace(tmp, path)
  return directory


def load_tokenizer(path: str, *, lower_case: bool | None = None) -> BertTokenizerFast:
  """Loads a BERT WordPiece tokenizer from a directory holding vocab.txt or tokenizer.json (or a hub id)."""
  kwargs = {} if lower_case is None else {"do_lower_case": lower_case}
  if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in ("vocab.txt", "tokenizer.json")):
    raise FileNotFoundError(f"{path} holds neither vocab.txt nor tokenizer.json: point config.text.tokenizer at a "
                            f"BERT tokenizer directory")
  tok = BertTokenizerFast.from_pretrained(path, **kwargs)
  probe = tok.convert_ids_to_tokens(tok("the")["input_ids"])
  if "[UNK]" in probe:
    raise ValueError(f"tokenizer at {path} maps the word 'the' to [UNK]; its vocabulary did not load")
  return tok


class TextEncoder:
  """Tokenizes to fixed-length int32 arrays (static shapes for jit)."""

  def __init__(self, tokenizer: BertTokenizerFast, max_len: int):
    self.tokenizer = tokenizer
    self.max_len = max_len

  @property
  def vocab_size(self) -> int:
    return len(self.tokenizer)

  def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
    out = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_len,
                         return_attention_mask=True, return_token_type_ids=False)
    return {"input_ids": np.asarray(out["input_ids"], np.int32),
            "attention_mask": np.asarray(out["attention_mask"], np.int32)}

  def decode(self, ids: Sequence[int]) -> str:
    return self.tokenizer.decode(list(ids), skip_special_tokens=True)
