"""Device mesh and logical-axis sharding (MaxText's vocabulary).

Parameters carry logical axis names (see `keepfit_jax.models.layers`); the config holds the
rules that map each logical name to mesh axes, e.g. `('embed', 'fsdp')`, `('mlp', 'tensor')`,
`('batch', ('data', 'fsdp'))`. A dimension whose size is not divisible by the mesh axes it maps
to is replicated instead (small biases and norms in tiny models), which is logged once.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
_LOGGED: set = set()


class ConfigError(ValueError):
  """A configuration that cannot run; the message names the key and what to do."""


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves one -1 entry so that the product of the mesh axes equals the device count."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  unknown = [i for i, s in enumerate(sizes) if s == -1]
  if len(unknown) > 1:
    raise ConfigError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"config.mesh: axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if unknown:
    if num_devices % known:
      raise ConfigError(f"config.mesh: {num_devices} devices cannot be split into "
                        f"{dict(zip(MESH_AXES, sizes))}; {num_devices} is not divisible by {known}")
    sizes[unknown[0]] = num_devices // known
  elif known != num_devices:
    raise ConfigError(f"config.mesh: {dict(zip(MESH_AXES, sizes))} needs {known} devices but {num_devices} "
                      f"are available; set one axis to -1 to fill the rest")
  return tuple(sizes)


def create_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def rules_dict(rules: Iterable[Sequence[Any]]) -> dict[str, Any]:
  out = {}
  for rule in rules:
    name, axes = rule
    out[name] = tuple(axes) if isinstance(axes, (list, tuple)) else axes
  return out


def _axis_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = axes if isinstance(axes, tuple) else (axes,)
  return int(np.prod([mesh.shape[a] for a in axes]))


def logical_to_mesh_spec(logical: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                         rules: Mapping[str, Any]) -> P:
  """Maps logical names of one array to a PartitionSpec; non-divisible dims are replicated."""
  if not logical:
    return P()
  spec, used = [], set()
  for name, dim in zip(logical, shape):
    axes = rules.get(name) if name is not None else None
    if axes is not None:
      axes_t = axes if isinstance(axes, tuple) else (axes,)
      axes_t = tuple(a for a in axes_t if a not in used and mesh.shape[a] > 1)
      if not axes_t or dim % _axis_size(mesh, axes_t):
        if axes_t and (name, dim) not in _LOGGED:
          _LOGGED.add((name, dim))
          logging.info("logical axis %r of size %d is not divisible by mesh axes %s (%d): replicated",
                       name, dim, axes_t, _axis_size(mesh, axes_t))
        axes = None
      else:
        used.update(axes_t)
        axes = axes_t if len(axes_t) > 1 else axes_t[0]
    spec.append(axes)
  return P(*spec)


def tree_shardings(logical_specs, abstract_tree, mesh: Mesh, rules: Mapping[str, Any]):
  """NamedShardings for a tree of abstract arrays given a matching tree of logical PartitionSpecs."""
  return jax.tree.map(
      lambda spec, x: NamedSharding(mesh, logical_to_mesh_spec(tuple(spec), x.shape, mesh, rules)),
      logical_specs, abstract_tree, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, rules: Mapping[str, Any], ndim: int = 1) -> NamedSharding:
  """Leading (batch) dimension split over the rule for 'batch'; the rest replicated."""
  axes = rules.get("batch")
  axes = tuple(a for a in (axes if isinstance(axes, tuple) else (axes,)) if a is not None)
  return NamedSharding(mesh, P(axes if axes else None, *([None] * (ndim - 1))))


def data_parallel_size(mesh: Mesh, rules: Mapping[str, Any]) -> int:
  return _axis_size(mesh, rules.get("batch"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
