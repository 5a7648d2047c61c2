"""Top-k cosine search over an index sharded by rows across devices.

Each device scans its own rows in fixed-size chunks (``lax.scan``): one (queries × chunk) score block
at a time, masked by the row filter, reduced to its top k and merged into a running top k. The full
(queries × index) score matrix never exists. The per-device candidates are then all-gathered and
merged. ``jax.lax.approx_max_k`` is used per chunk only on TPU, where it is optimised (elsewhere it
falls back to a sort); its reduction dimension is each chunk, never a sharded axis, and
``reduction_input_size_override`` tells it the whole (padded) index size so the recall target holds
overall. ``compile_for`` lowers the same program for abstract devices (a TPU topology's) from shapes alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import shard_map
from jax.sharding import NamedSharding, PartitionSpec as P

from designclip_jax import sharding

ROW_AXIS = sharding.BATCH_AXES[0]
DEFAULT_CHUNK = 16384
PAD_KIND = -1  # kind code of the padding rows: never matches a filter


def default_method() -> str:
  return 'approx' if jax.default_backend() == 'tpu' else 'exact'


def layout(num_rows: int, num_devices: int, chunk: int = DEFAULT_CHUNK) -> tuple[int, int]:
  """(chunk, padded rows): a chunk of at most ``chunk`` rows (a multiple of 8), and the rows padded to a
  whole number of chunks on every device."""
  per_device = -(-max(num_rows, 1) // num_devices)
  chunk = min(chunk, -(-per_device // 8) * 8)
  return chunk, -(-per_device // chunk) * chunk * num_devices


class DeviceIndex:
  """L2-normalised row vectors (float16 or float32) and per-row int codes (kind, class), on devices.

  Rows are padded to a multiple of (devices × chunk) with rows of kind ``PAD_KIND``."""

  def __init__(self, vectors: np.ndarray, kinds: np.ndarray, classes: np.ndarray, *, devices=None,
               chunk: int = DEFAULT_CHUNK, method: str | None = None):
    devices = devices if devices is not None else jax.local_devices()
    self.mesh = sharding.make_mesh(-1, 1, devices=devices)
    self.num_rows, self.dim = vectors.shape
    self.chunk, padded = layout(self.num_rows, len(devices), chunk)
    pad = padded - self.num_rows
    rows = NamedSharding(self.mesh, P(ROW_AXIS))
    self.vectors = jax.device_put(np.concatenate([vectors, np.zeros((pad, self.dim), vectors.dtype)]),
                                  NamedSharding(self.mesh, P(ROW_AXIS, None)))
    self.kinds = jax.device_put(np.concatenate([kinds, np.full(pad, PAD_KIND)]).astype(np.int32), rows)
    self.classes = jax.device_put(np.concatenate([classes, np.full(pad, -1)]).astype(np.int32), rows)
    self.method = method or default_method()

  def top_k(self, queries: np.ndarray, k: int, *, kinds=(0,), class_id: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row ids), each (Q, k), best first, over rows whose kind is in ``kinds`` and whose
    class is ``class_id`` (-1: any). Slots beyond the matching rows hold score -inf and row -1."""
    k = max(1, min(k, self.vectors.shape[0]))
    wanted = np.zeros(8, bool)
    wanted[list(kinds)] = True
    fn = _search_fn(self.mesh, k, self.chunk, self.method)
    scores, ids = fn(jnp.asarray(queries, jnp.float32), self.vectors, self.kinds, self.classes,
                     jnp.asarray(wanted), jnp.int32(class_id))
    scores, ids = np.asarray(scores), np.asarray(ids)
    return scores, np.where(np.isfinite(scores), ids, -1)


def compile_for(mesh, num_rows: int, dim: int, *, k: int, queries: int, method: str, chunk: int = DEFAULT_CHUNK,
                dtype=jnp.float16):
  """The search over ``num_rows`` rows on ``mesh``'s devices, lowered and compiled from shapes alone (no
  array is allocated): with a TPU topology's abstract devices, XLA:TPU's own executable."""
  chunk, padded = layout(num_rows, mesh.size, chunk)
  spec = lambda shape, dtype, *axes: jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P(*axes)))
  args = (spec((queries, dim), jnp.float32), spec((padded, dim), dtype, ROW_AXIS, None),
          spec((padded,), jnp.int32, ROW_AXIS), spec((padded,), jnp.int32, ROW_AXIS), spec((8,), jnp.bool_),
          spec((), jnp.int32))
  return _search_fn(mesh, min(k, padded), chunk, method).lower(*args).compile()


@functools.cache
def _search_fn(mesh, k: int, chunk: int, method: str):
  chunk_k = min(k, chunk)

  def local(queries, vectors, kinds, classes, wanted, class_id):
    n, d = vectors.shape
    total_rows = n * mesh.size  # every device's rows, padding included: never less than one chunk
    offset = jax.lax.axis_index(ROW_AXIS) * n
    ok = (kinds >= 0) & wanted[jnp.maximum(kinds, 0)] & ((class_id < 0) | (classes == class_id))
    blocks = (vectors.reshape(n // chunk, chunk, d), ok.reshape(n // chunk, chunk), jnp.arange(n // chunk) * chunk)

    def step(best, block):
      rows, row_ok, start = block
      # full float32 (not bf16 passes on TPU): the ranking must be eval's and the NumPy reference's
      scores = jnp.matmul(queries, rows.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST)
      s = jnp.where(row_ok[None], scores, -jnp.inf)
      if method == 'approx':
        s, i = jax.lax.approx_max_k(s, chunk_k, reduction_input_size_override=total_rows)
      else:
        s, i = jax.lax.top_k(s, chunk_k)
      return _merge(best, (s, i + start + offset), k), None

    init = (jnp.full((queries.shape[0], k), -jnp.inf), jnp.full((queries.shape[0], k), -1, jnp.int32))
    best, _ = jax.lax.scan(step, init, blocks)
    gathered = [jax.lax.all_gather(x, ROW_AXIS, axis=1, tiled=True) for x in best]
    return _merge(init, gathered, k)

  row = P(ROW_AXIS)
  mapped = shard_map(local, mesh=mesh, in_specs=(P(), P(ROW_AXIS, None), row, row, P(), P()),
                     out_specs=(P(), P()), check_vma=False)
  return jax.jit(mapped)


def _merge(a, b, k):
  scores = jnp.concatenate([a[0], b[0]], axis=1)
  ids = jnp.concatenate([a[1], b[1]], axis=1)
  top, pos = jax.lax.top_k(scores, k)
  return top, jnp.take_along_axis(ids, pos, axis=1)
