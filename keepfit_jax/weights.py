"""Pretrained weights: PyTorch / Hugging Face checkpoints -> keepfit_jax models (numerically equal).

Public API
  load_hf_bert(path_or_id)               -> (BertModel, tokenizer)      HF BERT dir or hub id
  load_torchvision_resnet50(path_or_sd)  -> ResNet                      torchvision ImageNet weights
  load_flair(path) / load_keepfit_v1(path) -> Pretrained(model, params, batch_stats, model_config, not_loaded)
  apply_init(config, params, batch_stats) -> (params, batch_stats)      config.init.{vision,text,model}
  convert_state_dict(state_dict, params, batch_stats, subtrees, namer, ignore) -> (params, batch_stats)

One generic mapping layer does all of it: a *namer* turns a leaf path of our pure-dict state
(e.g. ('layers', 0, 1, 'downsample', 'bn', 'mean')) into a torch key and a transform
('layer1.1.downsample.1.running_mean', identity); `convert_state_dict` walks our tree, fetches and
transforms each tensor, and raises one ValueError listing every missing key, every unexpected key
and every shape mismatch. Keys a loader deliberately drops are listed in its `ignore` patterns
(torchvision `fc.*` and `num_batches_tracked`, BERT `pooler.*`, the `position_ids` buffer, the
masked-LM head `cls.*`), nothing else is skipped. Linear weights are transposed (out,in)->(in,out),
conv kernels OIHW->HWIO; BatchNorm running mean/var go to `batch_stats`.

FLAIR / KeepFIT v1 checkpoint layout. Verified by reading the public sources (jusiro/FLAIR
`flair/modeling/model.py`; lxirich/MM-Retinal `KeepFIT/KeepFIT-CFP/keepfit/modeling/model.py`):
  - `vision_model.model.*`: `torchvision.models.resnet50` with `fc = Identity()` (so no `fc.*` keys);
    pooled 2048-d feature = torchvision's global average pool.
  - `vision_model.projection_head_vision.projection.weight` [512, 2048] and
    `text_model.projection_head_text.projection.weight` [512, 768]: Linear, bias=False (proj_bias=False);
    ProjectionLayer = x/||x|| -> Linear -> x/||x|| (our `layers.l2_normalize` around the projection).
  - `text_model.model.*`: `AutoModel.from_pretrained(Bio_ClinicalBERT, output_hidden_states=True)`, i.e. a
    HF BertModel *with* its pooler (`pooler.dense.*`, unused by FLAIR/KeepFIT: ignored here).
    Text embedding: stack(hidden_states[1], [2], [-1]) -> mean over tokens (padding included; the
    tokenizer pads to the longest prompt) -> mean over the three layers = our
    `text_pooling='layer_mean_with_padding'`. Tokenizer max length 77 (FLAIR) / 256 (KeepFIT v1).
  - `logit_scale`: scalar, init log(1/0.07), clamped to [0, 4.6052] before exp; zero-shot
    logits = exp(logit_scale) * image_emb @ text_emb.T  ([images, classes]).
  - KeepFIT v1 only: `attention.W_q.weight`, `attention.W_k.weight`, `attention.W_v.weight`,
    `attention.W_o.weight`, each [512, 512], no biases (d2l-style MultiHeadAttention, num_heads=2,
    dropout 0.5). Heads are contiguous slices of the 512 features (reshape(B, N, heads, -1)), and
    `softmax(scores)` is called without `dim` on a 3-D [batch*heads, Nq, Nk] tensor with batch=1
    (`.unsqueeze(0)`), so PyTorch's implicit dim is 0: the softmax runs over the *heads* axis, our
    `softmax_over='heads'`. KeepFIT v1 loads its own checkpoints with strict=True, so a released v1
    state_dict holds exactly these keys.
Assumed, not verified against a released file (none is available offline): that the released .pth
files are plain state_dicts of the modules above (FLAIR loads them with strict=False; we accept and
ignore the BERT `embeddings.position_ids` buffer older transformers saved, and `num_batches_tracked`),
possibly under a `state_dict`/`model` key or a DDP `module.` prefix (both unwrapped). The number of
attention heads cannot be read from BERT weights: the FLAIR/v1 loaders default to hidden_size // 64
(12 for Bio_ClinicalBERT), overridable with `text_num_heads=`.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from keepfit_jax.models.attention import MultiHeadAttention
from keepfit_jax.models.bert import BertConfig, BertModel
from keepfit_jax.models.keepfit import KeepFIT, KeepFITConfig
from keepfit_jax.models.resnet import ResNet, ResNetConfig

StateDict = Mapping[str, np.ndarray]
Path = tuple            # a leaf path in a pure dict: str keys and int (nnx.List) indices
Namer = Callable[[Path], tuple[str, str]]   # our path -> (torch key, transform name)

# Keys each source carries that have no counterpart in keepfit_jax, dropped on purpose.
TORCHVISION_IGNORE = (r"^fc\.", r"num_batches_tracked$")
BERT_IGNORE = (r"^embeddings\.position_ids$", r"^embeddings\.token_type_ids$", r"^pooler\.", r"^cls\.")
FLAIR_IGNORE = (r"num_batches_tracked$", r"^text_model\.model\.embeddings\.(position_ids|token_type_ids)$",
                r"^text_model\.model\.pooler\.")

_TRANSFORMS = {
    "none": lambda a: a,
    "linear": lambda a: a.T,                           # torch Linear (out, in) -> flax (in, out)
    "conv": lambda a: np.transpose(a, (2, 3, 1, 0)),   # OIHW -> HWIO
}


# --------------------------------------------------------------------------- reading checkpoints

def _to_numpy(value) -> np.ndarray:
  if isinstance(value, np.ndarray):
    return value
  if hasattr(value, "detach"):   # a torch tensor: bf16/fp16 have no numpy dtype, go through float32
    t = value.detach().cpu()
    if t.is_floating_point():
      t = t.float()
    return t.numpy()
  return np.asarray(value)


def as_state_dict(obj: Any, *, source: str = "state_dict") -> dict[str, np.ndarray]:
  """A dict of numpy arrays from a torch state_dict (tensors or arrays), unwrapping `state_dict`/`model`
  containers and a DDP `module.` prefix."""
  for wrapper in ("state_dict", "model"):
    if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
      obj = obj[wrapper]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{source}: expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}")
  sd = {str(k): _to_numpy(v) for k, v in obj.items()}
  if sd and all(k.startswith("module.") for k in sd):
    sd = {k[len("module."):]: v for k, v in sd.items()}
  return sd


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads .safetensors (safetensors.numpy) or a torch pickle (.bin/.pth/.pt, torch imported lazily)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return load_file(path)
  import torch   # only needed for PyTorch pickles
  return as_state_dict(torch.load(path, map_location="cpu", weights_only=True), source=path)


def _state_dict(path_or_state_dict) -> tuple[dict[str, np.ndarray], str]:
  if isinstance(path_or_state_dict, (str, os.PathLike)):
    return read_state_dict(os.fspath(path_or_state_dict)), os.fspath(path_or_state_dict)
  return as_state_dict(path_or_state_dict), "the given state_dict"


def _normalise_layer_norm_names(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Old TF-converted BERT checkpoints name LayerNorm parameters gamma/beta (transformers renames them too)."""
  out = {}
  for k, v in sd.items():
    k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
    out[re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)] = v
  return out


# --------------------------------------------------------------------------- namers (our path -> torch key)

_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def resnet_key(path: Path) -> tuple[str, str]:
  """torchvision ResNet names: conv1, bn1, layer{i+1}.{j}.conv2, layer{i+1}.{j}.downsample.{0,1}."""
  *mods, leaf = path
  if mods and mods[0] == "layers":
    i, j, *rest = mods[1:]
    mods = [f"layer{i + 1}", str(j)] + [{"conv": "0", "bn": "1"}.get(m, m) for m in rest]
  if leaf == "kernel":
    return ".".join(mods + ["weight"]), "conv"
  return ".".join(mods + [_BN[leaf]]), "none"


_BERT_MODULES = {
    ("attention", "query"): "attention.self.query", ("attention", "key"): "attention.self.key",
    ("attention", "value"): "attention.self.value", ("attention", "output"): "attention.output.dense",
    ("attention", "layer_norm"): "attention.output.LayerNorm", ("intermediate",): "intermediate.dense",
    ("output",): "output.dense", ("layer_norm",): "output.LayerNorm",
}


def bert_key(path: Path) -> tuple[str, str]:
  """transformers BertModel names (embeddings.*, encoder.layer.{i}.*)."""
  *mods, leaf = path
  if mods[0] == "embeddings":
    module = "embeddings." + ("LayerNorm" if mods[1] == "layer_norm" else mods[1])
  elif mods[0] == "layers":
    module = f"encoder.layer.{mods[1]}." + _BERT_MODULES[tuple(mods[2:])]
  else:
    raise KeyError(f"no BERT name for {path}")
  name = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}[leaf]
  return f"{module}.{name}", "linear" if leaf == "kernel" else "none"


_REFERENCE = {"query": "W_q", "key": "W_k", "value": "W_v", "out": "W_o"}


def keepfit_v1_key(path: Path) -> tuple[str, str]:
  """FLAIRModel / KeepFITModel names for a whole keepfit_jax KeepFIT state (caption decoder excluded)."""
  head, rest = path[0], path[1:]
  if head == "vision":
    key, t = resnet_key(rest)
    return "vision_model.model." + key, t
  if head == "text":
    key, t = bert_key(rest)
    return "text_model.model." + key, t
  if head == "vision_projection":
    return "vision_model.projection_head_vision.projection.weight", "linear"
  if head == "text_projection":
    return "text_model.projection_head_text.projection.weight", "linear"
  if head == "logit_scale":
    return "logit_scale", "none"
  if head == "knowledge_reference" and rest[-1] == "kernel":
    return f"attention.{_REFERENCE[rest[0]]}.weight", "linear"
  raise KeyError(f"no FLAIR / KeepFIT v1 name for {path}")


# --------------------------------------------------------------------------- the generic mapping layer

def _leaves(tree, prefix: Path = ()) -> Iterable[tuple[Path, Any]]:
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      yield from _leaves(v, prefix + (k,))
  else:
    yield prefix, tree


def _get(tree, path: Path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path: Path, value):
  """A copy of `tree` (nested dicts) with the leaf at `path` replaced; untouched branches are shared."""
  if not path:
    return value
  out = dict(tree)
  out[path[0]] = _set(tree[path[0]], path[1:], value)
  return out


def _place(value: np.ndarray, like) -> Any:
  """`value` with the dtype of `like`, and on its devices/sharding when `like` is a jax.Array."""
  dtype = getattr(like, "dtype", value.dtype)
  value = np.asarray(value, dtype=dtype)
  if isinstance(like, jax.Array):
    return jax.make_array_from_callback(value.shape, like.sharding, lambda idx: value[idx])
  return value


def _format_problems(source: str, missing, unexpected, mismatched, limit: int = 25) -> str:
  def block(title, items):
    items = list(items)
    if not items:
      return ""
    shown = "\n    ".join(items[:limit]) + (f"\n    ... and {len(items) - limit} more" if len(items) > limit else "")
    return f"\n  {title} ({len(items)}):\n    {shown}"
  return (f"{source} does not match the keepfit_jax model:"
          + block("missing keys", missing) + block("unexpected keys", unexpected)
          + block("wrong shapes (checkpoint after transpose -> expected)", mismatched))


def convert_state_dict(state_dict: StateDict, params: Mapping, batch_stats: Mapping,
                       subtrees: Sequence[Path], namer: Namer, *, prefix: str = "",
                       ignore: Sequence[str] = (), source: str = "checkpoint") -> tuple[dict, dict]:
  """Overwrites the `subtrees` of (params, batch_stats) with tensors of `state_dict`, strictly.

  For every leaf under each subtree (in params and in batch_stats), `namer(path)` gives the torch key
  (with `prefix` prepended) and the transform. Raises one ValueError naming every missing key, every
  key of `state_dict` neither used nor matched by an `ignore` regex, and every shape mismatch.
  Leaves may be arrays, jax.Arrays (the result keeps their sharding) or ShapeDtypeStructs.
  """
  ignore_re = [re.compile(p) for p in ignore]
  used, missing, mismatched, updates = set(), [], [], []
  for collection, tree in (("params", params), ("batch_stats", batch_stats)):
    for sub in subtrees:
      try:
        branch = _get(tree, sub)
      except (KeyError, IndexError, TypeError):
        continue   # e.g. a tower without batch statistics
      for rel, like in _leaves(branch):
        path = tuple(sub) + rel
        key, transform = namer(path)
        key = prefix + key
        if key not in state_dict:
          missing.append(key)
          continue
        used.add(key)
        value = _TRANSFORMS[transform](np.asarray(state_dict[key]))
        if tuple(value.shape) != tuple(like.shape):
          mismatched.append(f"{key}: {tuple(value.shape)} -> {tuple(like.shape)} at {collection}{list(path)}")
          continue
        updates.append((collection, path, value, like))
  unexpected = sorted(k for k in state_dict if k not in used and not any(r.search(k) for r in ignore_re))
  if missing or unexpected or mismatched:
    raise ValueError(_format_problems(source, missing, unexpected, mismatched))
  out = {"params": params, "batch_stats": batch_stats}
  for collection, path, value, like in updates:
    out[collection] = _set(out[collection], path, _place(value, like))
  return out["params"], out["batch_stats"]


def _abstract(make: Callable[[], nnx.Module]):
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(make)
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, params, batch_stats


def _merge(graphdef, params_state, batch_stats_state, params: dict, batch_stats: dict):
  """A concrete module from an abstract split and loaded pure dicts (every leaf must have been loaded)."""
  nnx.replace_by_pure_dict(params_state, jax.tree.map(jnp.asarray, params))
  nnx.replace_by_pure_dict(batch_stats_state, jax.tree.map(jnp.asarray, batch_stats))
  with nnx.use_eager_sharding(False):
    return nnx.merge(graphdef, params_state, batch_stats_state)


# --------------------------------------------------------------------------- Hugging Face BERT

def _resolve_hf(path_or_id: str) -> str:
  if os.path.isdir(path_or_id):
    return path_or_id
  if os.path.exists(path_or_id):
    raise ValueError(f"{path_or_id} is a file; give the Hugging Face model directory (config.json + weights)")
  from huggingface_hub import snapshot_download   # hub ids need the network
  return snapshot_download(path_or_id, allow_patterns=["*.json", "*.safetensors", "pytorch_model*.bin", "vocab.txt"])


def _read_hf_weights(directory: str) -> dict[str, np.ndarray]:
  for single in ("model.safetensors", "pytorch_model.bin"):
    if os.path.exists(os.path.join(directory, single)):
      return read_state_dict(os.path.join(directory, single))
  for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
    if os.path.exists(os.path.join(directory, index)):
      with open(os.path.join(directory, index)) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      sd = {}
      for shard in shards:
        sd.update(read_state_dict(os.path.join(directory, shard)))
      return sd
  raise FileNotFoundError(f"{directory} holds no model.safetensors or pytorch_model.bin")


def bert_config_from_hf(hf: Mapping[str, Any]) -> BertConfig:
  """transformers' BertConfig (config.json) -> ours; refuses variants our BertModel does not implement."""
  if hf.get("model_type", "bert") != "bert":
    raise ValueError(f"model_type {hf.get('model_type')!r} is not 'bert'")
  if hf.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"hidden_act {hf.get('hidden_act')!r}: only 'gelu' (erf) is implemented")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"position_embedding_type {hf.get('position_embedding_type')!r}: only 'absolute' is implemented")
  return BertConfig(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                    num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
                    max_position_embeddings=hf.get("max_position_embeddings", 512),
                    type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                    hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
                    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                    pad_token_id=hf.get("pad_token_id", 0) or 0)


def _bert_prefix(sd: StateDict) -> str:
  """'' for BertModel saves, 'bert.' for BertForMaskedLM / BertForPreTraining / classification saves."""
  return "bert." if any(k.startswith("bert.") for k in sd) else ""


def load_bert_state(sd: StateDict, params: Mapping, batch_stats: Mapping, subtree: Path = ("text",), *,
                    source: str = "checkpoint") -> tuple[dict, dict]:
  """A HF BERT state_dict (BertModel or 'bert.'-prefixed) into the text tower at `subtree` of a state."""
  sd = _normalise_layer_norm_names(sd)
  prefix = _bert_prefix(sd)
  n = len(subtree)
  # Keys outside the encoder prefix (an MLM head `cls.*`) are ignored like the pooler.
  ignore = [r"^" + re.escape(prefix) + p.lstrip("^") for p in BERT_IGNORE] + ([r"^cls\."] if prefix else [])
  return convert_state_dict(sd, params, batch_stats, [tuple(subtree)], lambda p: bert_key(p[n:]), prefix=prefix,
                            ignore=ignore, source=source)


def load_hf_bert(path_or_id: str, *, dtype: Any = None):
  """A HF BERT directory or hub id -> (keepfit_jax BertModel with those weights, its tokenizer).

  `model(input_ids, attention_mask)` returns last_hidden_state and hidden_states (embeddings + every
  layer), as transformers' BertModel with output_hidden_states=True.
  """
  from keepfit_jax.tokenizer import load_tokenizer
  directory = _resolve_hf(path_or_id)
  with open(os.path.join(directory, "config.json")) as f:
    cfg = bert_config_from_hf(json.load(f))
  graphdef, p_state, b_state = _abstract(lambda: BertModel(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
  params, batch_stats = load_bert_state(_read_hf_weights(directory), nnx.to_pure_dict(p_state),
                                        nnx.to_pure_dict(b_state), (), source=directory)
  return _merge(graphdef, p_state, b_state, params, batch_stats), load_tokenizer(directory)


# --------------------------------------------------------------------------- torchvision ResNet

def resnet_config_from_state_dict(sd: StateDict, prefix: str = "") -> ResNetConfig:
  """Architecture of a torchvision ResNet from its keys: block type, blocks per stage, stem width."""
  if prefix + "conv1.weight" not in sd:
    raise ValueError(f"no '{prefix}conv1.weight': not a torchvision ResNet state_dict")
  stages = []
  while any(k.startswith(f"{prefix}layer{len(stages) + 1}.") for k in sd):
    i = len(stages) + 1
    stages.append(len({k.split(".")[1] for k in (k[len(prefix):] for k in sd if k.startswith(f"{prefix}layer{i}."))}))
  block = "bottleneck" if f"{prefix}layer1.0.conv3.weight" in sd else "basic"
  return ResNetConfig(block, tuple(stages), int(sd[prefix + "conv1.weight"].shape[0]))


def load_torchvision_resnet50(path_or_state_dict, *, dtype: Any = None) -> ResNet:
  """torchvision ResNet weights (a .pth path or a state_dict) -> NNX ResNet with them, running stats included.

  The architecture is read from the keys (ResNet-50 for the ImageNet files; other torchvision ResNets
  load too). The classifier `fc.*` and `num_batches_tracked` are ignored on purpose.
  """
  sd, source = _state_dict(path_or_state_dict)
  cfg = resnet_config_from_state_dict(sd)
  graphdef, p_state, b_state = _abstract(lambda: ResNet(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
  params, batch_stats = convert_state_dict(sd, nnx.to_pure_dict(p_state), nnx.to_pure_dict(b_state), [()],
                                           resnet_key, ignore=TORCHVISION_IGNORE, source=source)
  return _merge(graphdef, p_state, b_state, params, batch_stats)


# --------------------------------------------------------------------------- FLAIR / KeepFIT v1

class Pretrained(NamedTuple):
  model: KeepFIT
  params: dict           # pure dicts, as in the train state
  batch_stats: dict
  model_config: KeepFITConfig
  not_loaded: tuple[str, ...]   # parts of our model the checkpoint has no weights for (freshly initialised)


def _is_keepfit_v1(sd: StateDict) -> bool:
  return "attention.W_q.weight" in sd


def _bert_config_from_state_dict(sd: StateDict, prefix: str, num_heads: int | None) -> BertConfig:
  word = sd.get(prefix + "embeddings.word_embeddings.weight")
  if word is None:
    raise ValueError(f"no '{prefix}embeddings.word_embeddings.weight': not a BERT text tower")
  hidden = int(word.shape[1])
  layers_ = len({k[len(prefix):].split(".")[2] for k in sd if k.startswith(prefix + "encoder.layer.")})
  heads = num_heads or max(hidden // 64, 1)
  if hidden % heads:
    raise ValueError(f"text hidden size {hidden} is not divisible by {heads} heads: pass text_num_heads=")
  return BertConfig(vocab_size=int(word.shape[0]), hidden_size=hidden, num_layers=layers_, num_heads=heads,
                    intermediate_size=int(sd[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
                    max_position_embeddings=int(sd[prefix + "embeddings.position_embeddings.weight"].shape[0]),
                    type_vocab_size=int(sd[prefix + "embeddings.token_type_embeddings.weight"].shape[0]))


def _model_subtrees(v1: bool) -> list[Path]:
  subtrees = [("vision",), ("text",), ("vision_projection",), ("text_projection",), ("logit_scale",)]
  return subtrees + [("knowledge_reference",)] if v1 else subtrees


def load_model_state(sd: StateDict, params: Mapping, batch_stats: Mapping, *, v1: bool | None = None,
                     source: str = "checkpoint") -> tuple[dict, dict]:
  """A FLAIR (v1=False) or KeepFIT v1 (v1=True; None = detect) state_dict into a whole KeepFIT state.

  The caption decoder (ours) is left as it is; for FLAIR the knowledge reference is too.
  """
  v1 = _is_keepfit_v1(sd) if v1 is None else v1
  if "conv1" not in params.get("vision", {}):
    raise ValueError(f"{source}: a FLAIR / KeepFIT v1 checkpoint needs a ResNet vision tower "
                     f"(config.model.vision.variant 'resnet50')")
  sd = _normalise_layer_norm_names(sd)
  return convert_state_dict(sd, params, batch_stats, _model_subtrees(v1), keepfit_v1_key, ignore=FLAIR_IGNORE,
                            source=source)


def _load_released(path_or_state_dict, *, v1: bool, text_num_heads: int | None, image_size: int,
                   dtype: Any) -> Pretrained:
  sd, source = _state_dict(path_or_state_dict)
  sd = _normalise_layer_norm_names(sd)
  if _is_keepfit_v1(sd) != v1:
    other = "load_keepfit_v1" if _is_keepfit_v1(sd) else "load_flair"
    raise ValueError(f"{source} is a {'KeepFIT v1' if not v1 else 'FLAIR'} checkpoint "
                     f"({'has' if not v1 else 'lacks'} attention.W_q.weight): use weights.{other}")
  if "vision_model.projection_head_vision.projection.weight" not in sd:
    raise ValueError(f"{source}: no 'vision_model.projection_head_vision.projection.weight'; not a FLAIR / "
                     f"KeepFIT v1 state_dict (keys start with: {sorted(sd)[:5]})")
  cfg = KeepFITConfig(
      vision=resnet_config_from_state_dict(sd, "vision_model.model."),
      text=_bert_config_from_state_dict(sd, "text_model.model.", text_num_heads),
      decoder=None, image_size=image_size,
      projection_dim=int(sd["vision_model.projection_head_vision.projection.weight"].shape[0]),
      reference_heads=2, reference_softmax="heads", text_pooling="layer_mean_with_padding")
  graphdef, p_state, b_state = _abstract(lambda: KeepFIT(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
  params, batch_stats = nnx.to_pure_dict(p_state), nnx.to_pure_dict(b_state)
  not_loaded = ()
  if not v1:   # FLAIR has no knowledge reference: initialise it, and say so
    d = cfg.projection_dim
    with nnx.use_eager_sharding(False):
      fresh = MultiHeadAttention(d, d, d, cfg.reference_heads, use_bias=False, rngs=nnx.Rngs(0))
    params = _set(params, ("knowledge_reference",), nnx.to_pure_dict(nnx.state(fresh, nnx.Param)))
    not_loaded = ("knowledge_reference",)
  params, batch_stats = load_model_state(sd, params, batch_stats, v1=v1, source=source)
  model = _merge(graphdef, p_state, b_state, params, batch_stats)
  _, p_state, b_state = nnx.split(model, nnx.Param, nnx.BatchStat)
  return Pretrained(model, nnx.to_pure_dict(p_state), nnx.to_pure_dict(b_state), cfg, not_loaded)


def load_flair(path_or_state_dict, *, text_num_heads: int | None = None, image_size: int = 512,
               dtype: Any = None) -> Pretrained:
  """A released FLAIR checkpoint -> KeepFIT model giving FLAIR's image/text embeddings and zero-shot logits.

  Text pooling is FLAIR's (`layer_mean_with_padding`); there is no caption decoder, and the knowledge
  reference (absent from FLAIR) is freshly initialised (`not_loaded`).
  """
  return _load_released(path_or_state_dict, v1=False, text_num_heads=text_num_heads, image_size=image_size,
                        dtype=dtype)


def load_keepfit_v1(path_or_state_dict, *, text_num_heads: int | None = None, image_size: int = 512,
                    dtype: Any = None) -> Pretrained:
  """A released KeepFIT v1 checkpoint -> KeepFIT model (v1 pooling, knowledge reference with softmax over heads)."""
  return _load_released(path_or_state_dict, v1=True, text_num_heads=text_num_heads, image_size=image_size,
                        dtype=dtype)


# --------------------------------------------------------------------------- a fresh run's initialisation

def apply_init(config, params: Mapping, batch_stats: Mapping) -> tuple[dict, dict]:
  """Overwrites parts of a freshly initialised state with the checkpoints named in config.init.

    config.init.model   a FLAIR or KeepFIT v1 checkpoint (detected): vision, text, projections, temperature,
                        and (v1) the knowledge reference; the caption decoder stays freshly initialised.
    config.init.vision  torchvision ResNet weights -> params/batch_stats['vision']
    config.init.text    HF BERT directory or hub id -> params['text']
  Every loaded tensor is shape-checked against the state; mismatches, missing and unknown keys are
  listed in one ValueError. jax.Array leaves keep their sharding. Returns the state unchanged when
  all three are ''.
  """
  init = config.init
  model_path, vision_path, text_path = init.get("model", ""), init.get("vision", ""), init.get("text", "")
  if model_path and (vision_path or text_path):
    raise ValueError("config.init.model loads both towers: leave config.init.vision and config.init.text empty")
  if model_path:
    sd, source = _state_dict(model_path)
    v1 = _is_keepfit_v1(sd)
    params, batch_stats = load_model_state(sd, params, batch_stats, v1=v1, source=f"config.init.model={source}")
    logging.info("initialised vision, text, projections%s from %s (%s)",
                 ", knowledge reference" if v1 else "", source, "KeepFIT v1" if v1 else "FLAIR")
    pooling = config.model.get("text_pooling", "")
    if pooling != "layer_mean_with_padding":
      logging.warning("config.init.model: FLAIR / KeepFIT v1 were trained with text_pooling="
                      "'layer_mean_with_padding', this run uses %r", pooling)
  if vision_path:
    if "vision" not in params or "conv1" not in params["vision"]:
      raise ValueError(f"config.init.vision={vision_path!r} holds ResNet weights, but "
                       f"config.model.vision.variant={config.model.vision.variant!r} is not a ResNet")
    sd, source = _state_dict(vision_path)
    params, batch_stats = convert_state_dict(sd, params, batch_stats, [("vision",)], lambda p: resnet_key(p[1:]),
                                             ignore=TORCHVISION_IGNORE, source=f"config.init.vision={source}")
    logging.info("initialised the vision tower from %s", source)
  if text_path:
    directory = _resolve_hf(text_path)
    try:
      params, batch_stats = load_bert_state(_read_hf_weights(directory), params, batch_stats, ("text",),
                                            source=f"config.init.text={text_path}")
    except ValueError as e:
      raise ValueError(f"{e}\n  (config.model.text and the tokenizer in config.text.tokenizer must match the "
                       f"checkpoint's config.json: vocabulary, hidden size, layers)") from None
    logging.info("initialised the text tower from %s", directory)
  return params, batch_stats
