"""Batched, jitted embedding of drawings and texts with a CLIP model (fixed batch shape: the last
batch is padded, so each tower compiles once)."""

from __future__ import annotations

from typing import Iterable, Sequence

import jax
import numpy as np
from flax import nnx

from designclip_jax.data import images as image_ops


def _batched_apply(fn, arrays: Iterable[np.ndarray], n: int, batch_size: int, desc: str, progress: bool):
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  out, buf = [], []
  bar = tqdm(total=n, desc=desc, unit='item', disable=not progress, leave=False)

  def flush():
    x = np.stack(buf)
    pad = batch_size - len(buf)
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    out.append(np.asarray(fn(x))[:len(buf)])
    bar.update(len(buf))
    buf.clear()

  for a in arrays:
    buf.append(a)
    if len(buf) == batch_size:
      flush()
  if buf:
    flush()
  bar.close()
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def embed_images(clip, pngs: Sequence[bytes], *, batch_size: int = 128, progress: bool = True,
                 normalization: str = 'clip') -> np.ndarray:
  """PNG-encoded drawings -> (N, D) float32 image embeddings (un-normalised)."""
  size = clip.config.vision.image_size
  graphdef, state = nnx.split(clip)
  fn = jax.jit(lambda state, x: nnx.merge(graphdef, state).encode_image(x))
  pixels = (image_ops.to_model_input(image_ops.decode_png(p), size, normalization) for p in pngs)
  return _batched_apply(lambda x: fn(state, x), pixels, len(pngs), batch_size, 'embed images', progress)


def embed_texts(clip, tokenizer, texts: Sequence[str], *, batch_size: int = 256, progress: bool = True) -> np.ndarray:
  graphdef, state = nnx.split(clip)
  fn = jax.jit(lambda state, x: nnx.merge(graphdef, state).encode_text(x))
  ids = (row for t0 in range(0, len(texts), batch_size) for row in tokenizer(texts[t0:t0 + batch_size]))
  return _batched_apply(lambda x: fn(state, x), ids, len(texts), batch_size, 'embed texts', progress)
