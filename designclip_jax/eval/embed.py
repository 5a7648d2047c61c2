"""Data-parallel, jitted embedding of drawings and texts with a CLIP model: one path for periodic eval,
final eval, the eval CLI and any other tool.

Every device of every process embeds a share of each global batch: the batch is sharded over a mesh
of all devices, each process prepares (decodes, tokenizes) only its own rows, and the embeddings are
gathered back so that every process holds all of them. Inputs are random-access sequences read item
by item, so a split's images never sit in memory together. Each tower compiles once per model and
batch shape: the jitted functions are cached by the model's graph definition, and the last batch is
padded to the fixed batch size.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from designclip_jax import sharding
from designclip_jax.data import images as image_ops
from designclip_jax.data.pipeline import map_in_threads


_TOWERS: list = []  # (graphdef, method, jitted function), newest last


class EmbeddingInterrupted(Exception):
  """``interrupt()`` asked to stop (a preemption notice): every process stops at the same batch."""


def _apply(graphdef, method: str, state, x, pixel_normalization: str | None = None):
  if pixel_normalization is not None:  # drawings arrive as uint8 grey (N, H, W, 1): normalised on the devices
    x = image_ops.normalize(x, pixel_normalization)
  return getattr(nnx.merge(graphdef, state), method)(x)


def _tower(graphdef, method: str):
  """``method`` of the model (encode_image / encode_text) jitted once per graph definition (and once per pixel
  normalisation, a static argument). Found by equality, not hashing: a graph definition may hold unhashable
  config values (lists read from JSON)."""
  for known, known_method, fn in _TOWERS:
    if known_method == method and known == graphdef:
      return fn
  fn = jax.jit(functools.partial(_apply, graphdef, method), static_argnames='pixel_normalization')
  _TOWERS.append((graphdef, method, fn))
  del _TOWERS[:-16]
  return fn


def _spans_all_devices(leaf) -> bool:
  s = getattr(leaf, 'sharding', None)
  return isinstance(s, NamedSharding) and s.mesh.size == jax.device_count()


def place_on_devices(clip):
  """The model with its parameters on a mesh of every device of every process. A model already there
  (a training state, sharded over the train mesh) is returned as is; otherwise (a freshly loaded
  checkpoint, same values in every process) its parameters are replicated over all devices."""
  graphdef, state = nnx.split(clip)
  leaves = jax.tree.leaves(state)
  if leaves and all(_spans_all_devices(x) for x in leaves):
    return clip
  mesh = sharding.make_mesh(-1, 1)
  state = jax.device_put(jax.tree.map(np.asarray, state), sharding.replicated(mesh))
  return nnx.merge(graphdef, state)


def _mesh_of(state) -> jax.sharding.Mesh:
  return jax.tree.leaves(state)[0].sharding.mesh


def _embed(clip, method: str, n: int, prepare_rows: Callable[[Sequence[int]], np.ndarray], *, batch_size: int,
           pixel_normalization: str | None = None,
           desc: str, progress: bool, interrupt: Callable[[], bool] | None = None) -> np.ndarray:
  """(n, D) float32 embeddings; ``prepare_rows(indices)`` gives the model inputs of those items.
  ``interrupt()`` is asked before every batch, by every process (so it may agree across processes), and a True
  stops the embedding with EmbeddingInterrupted."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  if n == 0:
    raise ValueError(f'{desc}: nothing to embed')
  graphdef, state = nnx.split(place_on_devices(clip))
  mesh = _mesh_of(state)
  fn = _tower(graphdef, method)
  rows_sharding = NamedSharding(mesh, P(mesh.axis_names))  # the batch over every mesh axis
  global_batch = -(-batch_size // mesh.size) * mesh.size
  # this process's rows of each global batch, in order: where the sharding puts its devices (not assumed
  # from the process index, nor contiguous: a TPU or hybrid mesh may interleave processes)
  rows = sorted({r for index in rows_sharding.addressable_devices_indices_map((global_batch,)).values()
                 for r in range(*index[0].indices(global_batch))})
  local = len(rows)
  example = prepare_rows(range(1))  # shape and dtype of one item, for padding
  outputs = []
  bar = tqdm(total=n, desc=desc, unit='item', leave=False, disable=not progress or jax.process_index() > 0)
  for b0 in range(0, n, global_batch):
    if interrupt is not None and interrupt():
      bar.close()
      raise EmbeddingInterrupted(f'{desc}: stopped at item {b0} of {n}')
    mine = [b0 + r for r in rows if b0 + r < n]  # a prefix of this process's rows: padding goes last
    x = prepare_rows(mine) if len(mine) else example[:0]
    if len(mine) < local:  # the last batch: pad to the compiled shape
      x = np.concatenate([x, np.zeros((local - len(mine),) + example.shape[1:], example.dtype)])
    outputs.append(fn(state, jax.make_array_from_process_local_data(rows_sharding, x),
                      pixel_normalization=pixel_normalization))
    bar.update(min(global_batch, n - b0))
  bar.close()
  if jax.process_count() > 1:
    outputs = multihost_utils.process_allgather(outputs, tiled=True)
  return np.concatenate([np.asarray(o, np.float32) for o in outputs])[:n]


def embed_images(clip, pngs: Sequence[bytes], *, batch_size: int = 128, progress: bool = True,
                 normalization: str = 'clip', load: Callable[[object], np.ndarray] | None = None,
                 interrupt: Callable[[], bool] | None = None) -> np.ndarray:
  """Drawings -> (N, D) float32 image embeddings (un-normalised). ``pngs`` is any random-access sequence
  (read item by item); by default its items are PNG bytes of preprocessed drawings, and ``load`` turns
  other items (e.g. file paths) into uint8 grayscale arrays. Drawings go to the devices as uint8 grey and are
  normalised there, as in training."""
  size = clip.config.vision.image_size
  image_ops.check_normalization(normalization)
  load = load or image_ops.decode_png
  # reading and decoding run in threads (map_in_threads), in order: the host's share of a batch at once
  prepare = lambda idx: np.stack(map_in_threads(lambda i: image_ops.fit(load(pngs[i]), size), idx))
  return _embed(clip, 'encode_image', len(pngs), prepare, batch_size=batch_size, desc='embed images',
                pixel_normalization=normalization, progress=progress, interrupt=interrupt)


def embed_texts(clip, tokenizer, texts: Sequence[str], *, batch_size: int = 256, progress: bool = True,
                interrupt: Callable[[], bool] | None = None) -> np.ndarray:
  """Texts -> (N, D) float32 text embeddings (un-normalised). ``texts`` may read on access (threads)."""
  prepare = lambda idx: tokenizer(map_in_threads(texts.__getitem__, idx))
  return _embed(clip, 'encode_text', len(texts), prepare, batch_size=batch_size, desc='embed texts',
                progress=progress, interrupt=interrupt)
