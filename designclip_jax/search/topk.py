"""Top-k cosine search over an index sharded by rows across devices, each query with its own row filter.

Each device scans its own rows in fixed-size chunks (``lax.scan``): one (queries × chunk) score block
at a time, masked by every query's filter, reduced to its top k and merged into a running top k. The full
(queries × index) score matrix never exists. The per-device candidates are then all-gathered and
merged. ``jax.lax.approx_max_k`` is used per chunk only on TPU, where it is optimised (elsewhere it
falls back to a sort); its reduction dimension is each chunk, never a sharded axis, and
``reduction_input_size_override`` tells it the whole (padded) index size so the recall target holds
overall. ``compile_for`` lowers the same program for abstract devices (a TPU topology's) from shapes alone.

A row filter (``passes``) is a function of small integer codes per row and per-query tables, the same
code on the devices (jax.numpy) and on the host (NumPy): a row passes when its kind, USPC class slot and
Locarno slot are wanted by the query, its effective filing day is before the query's cut-off, and its
family is not the one the query leaves out.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import shard_map
from jax.sharding import NamedSharding, PartitionSpec as P

from designclip_jax import sharding

ROW_AXIS = sharding.BATCH_AXES[0]
DEFAULT_CHUNK = 16384
KIND_SLOTS = 8
PAD_KIND = KIND_SLOTS - 1  # kind of the padding rows: no query wants it
NO_CUTOFF = np.iinfo(np.int32).max  # a query without a date filter
MISSING_DAY = NO_CUTOFF - 1  # a row without a date: before no cut-off, yet passes when there is none
NO_FAMILY = -1  # a query that leaves no family out
COLUMNS = ('kind', 'klass', 'locarno', 'day', 'family')


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rows:
  """Per-row int codes: ``kind`` (0.. < PAD_KIND), ``klass`` and ``locarno`` (slots of the query tables; 0: the
  row has none), ``day`` (effective filing date, days since 1970; MISSING_DAY: none), ``family`` (>= 0)."""
  kind: np.ndarray
  klass: np.ndarray
  locarno: np.ndarray
  day: np.ndarray
  family: np.ndarray

  @classmethod
  def plain(cls, kinds, classes=None) -> 'Rows':
    """Rows with kinds (and class slots) only: no Locarno, dates or families."""
    n = len(kinds)
    zeros = np.zeros(n, np.int32)
    return cls(np.asarray(kinds, np.int32), zeros if classes is None else np.asarray(classes, np.int32), zeros,
               np.full(n, MISSING_DAY, np.int32), np.arange(n, dtype=np.int32))


@dataclasses.dataclass(frozen=True)
class Wanted:
  """Per-query filters, (Q, ...) each: boolean tables over kind, class and Locarno slots, the cut-off day
  (rows filed strictly before it pass; NO_CUTOFF: every row) and the family left out (NO_FAMILY: none)."""
  kinds: np.ndarray    # (Q, KIND_SLOTS)
  classes: np.ndarray  # (Q, class slots)
  locarno: np.ndarray  # (Q, Locarno slots)
  before: np.ndarray   # (Q,) int32
  family: np.ndarray   # (Q,) int32

  @classmethod
  def stack(cls, items: list['Wanted']) -> 'Wanted':
    return cls(*(np.concatenate([getattr(w, f.name) for w in items]) for f in dataclasses.fields(cls)))

  def pad(self, queries: int) -> 'Wanted':
    """Repeat the last query's filters up to ``queries`` rows (padding queries, results dropped)."""
    extra = queries - len(self.before)
    return Wanted(*(np.concatenate([x, np.repeat(x[-1:], extra, axis=0)]) for x in dataclasses.astuple(self)))


def wanted(kinds=(0,), *, class_slots: int = 1, classes=None, locarno_slots: int = 1, locarno=None,
           before: int = NO_CUTOFF, family: int = NO_FAMILY) -> Wanted:
  """One query's filters: ``kinds``, and (None: any) the ``classes`` / ``locarno`` slots it wants."""
  def table(size, slots):
    t = np.ones(size, bool) if slots is None else np.zeros(size, bool)
    if slots is not None:
      t[list(slots)] = True
    return t[None]
  k = np.zeros(KIND_SLOTS, bool)
  k[list(kinds)] = True
  return Wanted(k[None], table(class_slots, classes), table(locarno_slots, locarno), np.array([before], np.int32),
                np.array([family], np.int32))


def passes(xp, rows: Rows, want: Wanted):
  """(Q, R) bool: which of ``rows`` each query's filter lets through (``xp``: numpy or jax.numpy)."""
  take = lambda table, codes: xp.take(table, codes, axis=1)
  return (take(want.kinds, rows.kind) & take(want.classes, rows.klass) & take(want.locarno, rows.locarno)
          & (rows.day[None] < want.before[:, None]) & (rows.family[None] != want.family[:, None]))


def default_method() -> str:
  return 'approx' if jax.default_backend() == 'tpu' else 'exact'


def layout(num_rows: int, num_devices: int, chunk: int = DEFAULT_CHUNK) -> tuple[int, int]:
  """(chunk, padded rows): a chunk of at most ``chunk`` rows (a multiple of 8), and the rows padded to a
  whole number of chunks on every device."""
  per_device = -(-max(num_rows, 1) // num_devices)
  chunk = min(chunk, -(-per_device // 8) * 8)
  return chunk, -(-per_device // chunk) * chunk * num_devices


class DeviceIndex:
  """L2-normalised row vectors (float16 or float32) and their filter codes (``Rows``), on devices.

  Rows are padded to a multiple of (devices × chunk) with rows of kind ``PAD_KIND``."""

  def __init__(self, vectors: np.ndarray, rows: Rows, *, devices=None, chunk: int = DEFAULT_CHUNK,
               method: str | None = None):
    devices = devices if devices is not None else jax.local_devices()
    self.mesh = sharding.make_mesh(-1, 1, devices=devices)
    self.num_rows, self.dim = vectors.shape
    self.chunk, padded = layout(self.num_rows, len(devices), chunk)
    pad = padded - self.num_rows
    sharded = NamedSharding(self.mesh, P(ROW_AXIS))
    self.vectors = jax.device_put(np.concatenate([vectors, np.zeros((pad, self.dim), vectors.dtype)]),
                                  NamedSharding(self.mesh, P(ROW_AXIS, None)))
    fill = {'kind': PAD_KIND, 'klass': 0, 'locarno': 0, 'day': MISSING_DAY, 'family': 0}
    self.rows = Rows(*(jax.device_put(np.concatenate([np.asarray(getattr(rows, c)), np.full(pad, fill[c])])
                                      .astype(np.int32), sharded) for c in COLUMNS))
    self.method = method or default_method()

  def top_k(self, queries: np.ndarray, k: int, want: Wanted | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row ids), each (Q, k), best first, over the rows each query's filter lets through (default:
    kind 0, no other filter). Slots beyond the passing rows hold score -inf and row -1."""
    k = max(1, min(k, self.vectors.shape[0]))
    want = want or wanted()
    if len(want.before) == 1 < len(queries):
      want = want.pad(len(queries))
    fn = _search_fn(self.mesh, k, self.chunk, self.method)
    scores, ids = fn(jnp.asarray(queries, jnp.float32), self.vectors, self.rows,
                     jax.tree.map(jnp.asarray, dataclasses.astuple(want)))
    scores, ids = np.asarray(scores), np.asarray(ids)
    return scores, np.where(np.isfinite(scores), ids, -1)


def compile_for(mesh, num_rows: int, dim: int, *, k: int, queries: int, method: str, chunk: int = DEFAULT_CHUNK,
                dtype=jnp.float16, class_slots: int = 64, locarno_slots: int = 512):
  """The search over ``num_rows`` rows on ``mesh``'s devices, lowered and compiled from shapes alone (no
  array is allocated): with a TPU topology's abstract devices, XLA:TPU's own executable."""
  chunk, padded = layout(num_rows, mesh.size, chunk)
  spec = lambda shape, dtype, *axes: jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P(*axes)))
  rows = Rows(*(spec((padded,), jnp.int32, ROW_AXIS) for _ in COLUMNS))
  want = (spec((queries, KIND_SLOTS), jnp.bool_), spec((queries, class_slots), jnp.bool_),
          spec((queries, locarno_slots), jnp.bool_), spec((queries,), jnp.int32), spec((queries,), jnp.int32))
  args = (spec((queries, dim), jnp.float32), spec((padded, dim), dtype, ROW_AXIS, None), rows, want)
  return _search_fn(mesh, min(k, padded), chunk, method).lower(*args).compile()


@functools.cache
def _search_fn(mesh, k: int, chunk: int, method: str):
  chunk_k = min(k, chunk)

  def local(queries, vectors, rows, want):
    n, d = vectors.shape
    total_rows = n * mesh.size  # every device's rows, padding included: never less than one chunk
    offset = jax.lax.axis_index(ROW_AXIS) * n
    want = Wanted(*want)
    codes = Rows(*(getattr(rows, c).reshape(n // chunk, chunk) for c in COLUMNS))
    blocks = (vectors.reshape(n // chunk, chunk, d), codes, jnp.arange(n // chunk) * chunk)

    def step(best, block):
      block_vectors, block_rows, start = block
      # full float32 (not bf16 passes on TPU): the ranking must be eval's and the NumPy reference's
      scores = jnp.matmul(queries, block_vectors.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST)
      s = jnp.where(passes(jnp, block_rows, want), scores, -jnp.inf)
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
  mapped = shard_map(local, mesh=mesh, in_specs=(P(), P(ROW_AXIS, None), Rows(*(row for _ in COLUMNS)), P()),
                     out_specs=(P(), P()), check_vma=False)
  return jax.jit(mapped)


def _merge(a, b, k):
  scores = jnp.concatenate([a[0], b[0]], axis=1)
  ids = jnp.concatenate([a[1], b[1]], axis=1)
  top, pos = jax.lax.top_k(scores, k)
  return top, jnp.take_along_axis(ids, pos, axis=1)
