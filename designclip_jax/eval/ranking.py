"""Exact ranks of the relevant gallery items of each query: the machinery under ``metrics.image_retrieval``.

Scores are cosine similarities computed on the device in full float32 (``Precision.HIGHEST``: default
precision is bf16 passes on TPU and TF32 on GPU, errors of ~1e-4 that reorder a large gallery), one
block of query rows against the gallery in fixed-size chunks, and brought to the host a block at a time
(a block holds at most ``BLOCK_SCORES`` similarities, so memory is linear in the gallery and no Q×G
matrix exists). There each row is ranked with a sort of its non-relevant scores: for every relevant item
the number of non-relevant items scoring at least as high (scikit-learn's average precision, ties
included) and the number placed before it by a stable sort of the scores (ties fall by gallery order).

The gallery is read where it lies: on CPU (where device memory is host memory) each chunk is copied to
the device when used and dropped after, so the gallery is never held twice; on an accelerator each chunk
is placed once and kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

HIGHEST = jax.lax.Precision.HIGHEST
BLOCK_SCORES = 2 ** 24  # similarities on the host at once (64 MiB of float32, plus a sorted copy)


@jax.jit
def similarities(q, g):
  """Cosine similarities of raw (un-normalised) rows: both sides are normalised here, the same way for
  every chunk, so identical gallery rows score identically wherever they sit (ties stay ties)."""
  normalize = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return jnp.dot(normalize(q), normalize(g).T, precision=HIGHEST, preferred_element_type=jnp.float32)


def _local_mesh():
  devices = jax.local_devices()
  return jax.sharding.Mesh(np.array(devices), ('rows',)) if len(devices) > 1 else None


def pad_rows(x, n):
  if x.shape[0] == n:
    return x
  return np.concatenate([x, np.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)])


def keep_gallery_on_device() -> bool:
  """Accelerators keep the gallery's chunks (their memory is not the host's); CPU copies each when used."""
  return jax.local_devices()[0].platform != 'cpu'


class GalleryChunks:
  """The gallery's rows in fixed-size float32 chunks on the local device(s), the last one zero-padded
  (one compiled shape), replicated when there are several devices (query rows are sharded over them)."""

  def __init__(self, gallery: np.ndarray, chunk: int, *, keep: bool):
    self.gallery, self.chunk = gallery, chunk
    self.starts = range(0, gallery.shape[0], chunk)
    mesh = _local_mesh()
    self._sharding = NamedSharding(mesh, P()) if mesh else None
    self._kept = [self._put(i) for i in range(len(self.starts))] if keep else None

  def _put(self, i):
    rows = np.asarray(self.gallery[self.starts[i]:self.starts[i] + self.chunk], np.float32)
    return jax.device_put(pad_rows(rows, self.chunk), self._sharding)

  def __len__(self):
    return len(self.starts)

  def __getitem__(self, i):
    return self._kept[i] if self._kept is not None else self._put(i)


def block_rows(num_query: int, num_gallery: int, limit: int | None = None) -> int:
  """Query rows per block: as many as ``BLOCK_SCORES`` allows, no more than the queries (or ``limit``), a
  multiple of the local device count (query rows are sharded over the devices)."""
  rows = min(BLOCK_SCORES // num_gallery, num_query)
  if limit:
    return max(1, min(rows, limit))
  devices = len(jax.local_devices())
  return max(devices, -(-rows // devices) * devices)


def score_blocks(query: np.ndarray, gallery: GalleryChunks, rows: int):
  """Yield (first query row, (n, G) float32 host scores) for blocks of ``rows`` query rows. The host
  buffer is reused: a block is valid until the next one is requested."""
  num_gallery = gallery.gallery.shape[0]
  mesh = _local_mesh()
  shard = mesh is not None and rows % mesh.size == 0
  block = np.empty((rows, num_gallery), np.float32)
  for q0 in range(0, query.shape[0], rows):
    q = pad_rows(np.asarray(query[q0:q0 + rows], np.float32), rows)
    q = jax.device_put(q, NamedSharding(mesh, P('rows')) if shard else None)
    for i, g0 in enumerate(gallery.starts):
      width = min(gallery.chunk, num_gallery - g0)
      block[:, g0:g0 + width] = np.asarray(similarities(q, gallery[i]))[:, :width]
    yield q0, block[:min(rows, query.shape[0] - q0)]


def rank_relevant(row: np.ndarray, sorted_nonrelevant: np.ndarray, relevant: np.ndarray, own: int = -1):
  """One query's row of scores, its non-relevant scores sorted ascending, its relevant columns, and its
  own column (left out of its ranking; -1: none) -> for each relevant item, in the order a stable sort of
  the scores places them (score descending, then column): its score, ``at_least`` (non-relevant items
  scoring ≥ it) and ``position`` (its 1-based place in the stable order of all ranked items)."""
  scores = row[relevant]
  order = np.lexsort((relevant, -scores))  # stable order: score descending, then column
  scores, columns = scores[order], relevant[order]
  n = sorted_nonrelevant.size
  at_least = n - np.searchsorted(sorted_nonrelevant, scores, side='left')
  before = n - np.searchsorted(sorted_nonrelevant, scores, side='right')  # strictly higher
  tied = at_least > before
  if tied.any():  # equal scores: a stable sort puts the lower column first
    nonrelevant = np.ones(row.size, bool)
    nonrelevant[relevant] = False
    if own >= 0:
      nonrelevant[own] = False
    before[tied] += _tied_before(row, nonrelevant, scores[tied], columns[tied])
  position = np.arange(1, scores.size + 1) + before
  return scores, at_least, position


def _tied_before(row, nonrelevant, values, columns):
  """For each (value, column): non-relevant columns below ``column`` whose score equals ``value``."""
  tie_values = np.unique(values)
  candidates = np.flatnonzero(nonrelevant & np.isin(row, tie_values))
  width = row.size + 1
  keys = np.sort(np.searchsorted(tie_values, row[candidates]) * width + candidates)
  group = np.searchsorted(tie_values, values) * width
  return np.searchsorted(keys, group + columns) - np.searchsorted(keys, group)


def ranked_relevant(query, gallery, relevant, own, *, query_chunk=None, gallery_chunk=8192):
  """For every query i with relevant gallery rows ``relevant(i)`` (ascending; ``own[i]`` ≥ 0: its own row,
  left out of its ranking), yield (i, *rank_relevant(...)): its relevant scores, ``at_least`` and
  ``position``, best first. Queries without a relevant row are skipped."""
  chunks = GalleryChunks(gallery, gallery_chunk, keep=keep_gallery_on_device())
  rows = block_rows(query.shape[0], gallery.shape[0], query_chunk)
  sorted_rows = np.empty((rows, gallery.shape[0]), np.float32)
  for q0, block in score_blocks(query, chunks, rows):
    queries = range(q0, q0 + len(block))
    nonrelevant = sorted_rows[:len(block)]
    np.copyto(nonrelevant, block)
    for b, i in enumerate(queries):  # relevant scores (and the query's own) to -inf: they sort first, then are cut
      nonrelevant[b, relevant(i)] = -np.inf
      if own[i] >= 0:
        nonrelevant[b, own[i]] = -np.inf
    nonrelevant.sort(axis=1)
    for b, i in enumerate(queries):
      columns = relevant(i)
      if columns.size:
        yield (i,) + rank_relevant(block[b], nonrelevant[b, columns.size + (own[i] >= 0):], columns, own[i])
