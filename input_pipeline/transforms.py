"""Image preprocessing of FLAIR / KeepFIT v1 (METHOD.md §3), in NumPy + PIL on the host.

Letterbox to a square (keep the aspect ratio, zero-pad bottom/right); augment categorical
images only: horizontal flip p=0.5; affine (rotation ±5°, scale 0.9–1) p=0.25; brightness and
contrast jitter 0.2 p=0.25. Pixels stay uint8 here and become [0, 1] floats on the device.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes the long side to `size` and pads bottom/right with zeros to size x size."""
  h, w = image.shape[:2]
  scale = size / max(h, w)
  nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
  if (nh, nw) != (h, w):
    image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
  out = np.zeros((size, size, 3), np.uint8)
  out[:nh, :nw] = image
  return out


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  if rng.random() < 0.5:
    image = image[:, ::-1]
  if rng.random() < 0.25:
    angle = rng.uniform(-5, 5)
    scale = rng.uniform(0.9, 1.0)
    image = _rotate_scale(image, angle, scale)
  if rng.random() < 0.25:
    b = rng.uniform(0.8, 1.2)
    c = rng.uniform(0.8, 1.2)
    x = image.astype(np.float32) * b
    mean = x.mean()
    image = np.clip((x - mean) * c + mean, 0, 255).astype(np.uint8)
  return np.ascontiguousarray(image)


def _rotate_scale(image: np.ndarray, angle: float, scale: float) -> np.ndarray:
  h, w = image.shape[:2]
  cx, cy = w / 2, h / 2
  t = np.deg2rad(angle)
  # Inverse map output -> input pixel for PIL's affine transform.
  a, b = np.cos(t) / scale, np.sin(t) / scale
  coeffs = (a, b, cx - a * cx - b * cy, -b, a, cy + b * cx - a * cy)
  return np.asarray(Image.fromarray(image).transform((w, h), Image.AFFINE, coeffs, Image.BILINEAR))
