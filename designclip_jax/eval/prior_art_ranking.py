"""Ranks of each query's relevant designs in its own gallery (the rule of eval.prior_art), scored in blocks on
every local device: the patents x patents score matrix is never formed.

The collection is put in effective-date order once, so a query's gallery is a prefix of that order (the patents
filed before its cut-off) less its family. Queries go in date order, in blocks of B; a block's scores against the
prefix its latest query needs (W patents, W rounded up to a chunk count that is a power of two) are computed on
the devices, chunk by chunk, by a ``Scorer`` (full float32), and brought to the host as one (B, W) array,
B x W <= ``block_scores`` (as eval.ranking does for DeepPatent). There each query's gallery scores other than its
relevant designs are sorted once (one sort of the block), and each relevant design's rank is 1 + the gallery
patents placed before it: a higher score, or an equal score at an earlier collection row. A relevant design's
score is read from the same array as the others', so a tie is a tie. Memory: the scorer's data (O(P·D)) and one
block, at any collection size; work: each query's scores against its prefix (half the collection on average) and
a sort of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from designclip_jax.eval import ranking
from designclip_jax.eval.metrics import l2_normalize
from designclip_jax.eval.prior_art import Judgments, codes

CHUNK = 8192          # gallery patents (or drawings) per device call


def _mesh() -> Mesh | None:
  devices = jax.local_devices()
  return Mesh(np.array(devices), ('rows',)) if len(devices) > 1 else None


def put_rows(x):
  """Rows split over the local devices (a block's rows are a multiple of their count)."""
  mesh = _mesh()
  return jax.device_put(x, NamedSharding(mesh, P('rows')) if mesh else None)


def put_replicated(x):
  mesh = _mesh()
  return jax.device_put(x, NamedSharding(mesh, P()) if mesh else None)


class Scorer:
  """Scores of query patents against the collection in effective-date order. ``prepare(order, chunk)`` is called
  once with the collection's rows in that order; ``scores(rows, width)`` then gives the (len(rows), width) float32
  scores of the patents at collection ``rows`` against positions 0..width-1 of the order (width a multiple of
  ``chunk``; positions past the collection may score anything), its rows split over the devices (``put_rows``)."""

  def prepare(self, order: np.ndarray, chunk: int) -> None:
    raise NotImplementedError

  def scores(self, rows: np.ndarray, width: int) -> jax.Array:
    raise NotImplementedError


class Cosine(Scorer):
  """Cosine similarity of one vector per patent (eval.ranking.similarities: full float32, both sides normalised
  there, so identical rows score identically wherever they sit)."""

  def __init__(self, vectors):
    self.vectors = np.asarray(vectors, np.float32)
    if self.vectors.ndim != 2 or not np.isfinite(self.vectors).all():
      raise ValueError(f'patent vectors must be a finite (P, D) array, got shape {self.vectors.shape}')

  def prepare(self, order, chunk):
    self.chunks = ranking.GalleryChunks(self.vectors[order], chunk, keep=ranking.keep_gallery_on_device())

  def scores(self, rows, width):
    q = put_rows(self.vectors[rows])
    return jnp.concatenate([ranking.similarities(q, self.chunks[i]) for i in range(width // self.chunks.chunk)], 1)


@jax.jit
def _best_pair_into(row, query_views, query_mask, chunk, local_owner, first):
  """Max over (query view, chunk drawing) of the cosine, per query and per patent owning the drawing, merged into
  ``row`` (B, W + chunk) at columns first + local_owner (a chunk's drawings belong to at most ``chunk`` consecutive
  patents; padding drawings have local_owner = chunk and are dropped)."""
  b, v, d = query_views.shape
  sims = jnp.dot(query_views.reshape(b * v, d), chunk.T, precision=ranking.HIGHEST,
                 preferred_element_type=jnp.float32).reshape(b, v, -1)
  best = jnp.max(jnp.where(query_mask[:, :, None], sims, -jnp.inf), axis=1)  # (B, chunk)
  per_patent = jax.ops.segment_max(best.T, local_owner, num_segments=chunk.shape[0]).T
  current = jax.lax.dynamic_slice_in_dim(row, first, chunk.shape[0], axis=1)
  return jax.lax.dynamic_update_slice_in_dim(row, jnp.maximum(current, per_patent), first, axis=1)


class BestViewPair(Scorer):
  """The best view pair: the largest cosine between any drawing of the query and any drawing of the gallery
  patent (unit vectors). ``views`` (N, D) drawings, ``offsets`` (P + 1,): patent p's are views[offsets[p]:
  offsets[p + 1]]. Costs V_query x V_gallery times the dot products of ``Cosine``."""

  def __init__(self, views, offsets):
    self.views = l2_normalize(views)
    self.offsets = np.asarray(offsets, np.int64)
    if not np.isfinite(self.views).all() or self.offsets[-1] != len(self.views) or (np.diff(self.offsets) < 1).any():
      raise ValueError('view vectors must be finite and every patent needs at least one (offsets must end at N)')

  def prepare(self, order, chunk):
    counts = np.diff(self.offsets)[order]
    ends = np.cumsum(counts)
    by_date = np.repeat(self.offsets[order] - (ends - counts), counts) + np.arange(ends[-1])  # drawings in date order
    self.chunks = ranking.GalleryChunks(self.views[by_date], chunk, keep=ranking.keep_gallery_on_device())
    owner = np.full(len(self.chunks) * chunk, -1, np.int64)
    owner[:ends[-1]] = np.repeat(np.arange(len(order)), counts)
    self.first = owner[::chunk].copy()  # each chunk's first patent position
    local = owner.reshape(-1, chunk) - self.first[:, None]
    self.local_owner = [put_replicated(np.where(o >= 0, l, chunk).astype(np.int32))
                        for o, l in zip(owner.reshape(-1, chunk), local)]
    self.views_before = ends  # drawings of positions < w: views_before[w - 1]

  def scores(self, rows, width):
    counts = np.diff(self.offsets)[rows]
    v = 1 << int(np.ceil(np.log2(counts.max())))  # query drawings padded to a power of two (few compiled shapes)
    query = np.zeros((len(rows), v, self.views.shape[1]), np.float32)
    mask = np.arange(v)[None, :] < counts[:, None]
    query[mask] = self.views[np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows])]
    query, mask = put_rows(query), put_rows(mask)
    chunk = self.chunks.chunk
    row = put_rows(np.full((len(rows), width + chunk), -np.inf, np.float32))
    needed = -(-int(self.views_before[min(width, len(self.views_before)) - 1]) // chunk)
    for i in range(needed):
      row = _best_pair_into(row, query, mask, self.chunks[i], self.local_owner[i], int(self.first[i]))
    return row[:, :width]


def _bucket(n: int, chunk: int, full: int) -> int:
  """Width covering n positions: a power-of-two number of chunks, at most the whole (padded) collection."""
  chunks = max(1, -(-n // chunk))
  return min(full, chunk << int(np.ceil(np.log2(chunks))))


def _rank_in_gallery(row, in_gallery, sorted_others, relevant, row_by_pos):
  """1-based ranks of ``relevant`` (positions) among the gallery positions of one query: ``row`` its scores,
  ``in_gallery`` its gallery mask, ``sorted_others`` the scores of its gallery's other patents, ascending. Before a
  design: a higher score, or an equal one at an earlier collection row."""
  own, own_row = row[relevant], row_by_pos[relevant]
  higher = sorted_others.size - np.searchsorted(sorted_others, own, side='right')
  tied = np.searchsorted(sorted_others, own, side='right') - np.searchsorted(sorted_others, own, side='left')
  others = in_gallery.copy()
  others[relevant] = False
  for i in np.flatnonzero(tied):  # exact ties with other patents (rare but for duplicates and the baselines): by row
    higher[i] += np.count_nonzero(row_by_pos[np.flatnonzero(others & (row == own[i]))] < own_row[i])
  among = (own[None, :] > own[:, None]) | ((own[None, :] == own[:, None]) & (own_row[None, :] < own_row[:, None]))
  return 1 + higher + among.sum(axis=1)


def citation_ranks(scorer: Scorer, effective, family, judged: Judgments, *, chunk: int = CHUNK,
                   block_scores: int = ranking.BLOCK_SCORES) -> np.ndarray:
  """1-based rank of every relevant design in its query's gallery, aligned with ``judged.relevant``; ties fall by
  collection row (prior_art.TIE_RULE). ``effective`` and ``family`` (P,) as given to ``prior_art.judgments``."""
  days = np.asarray(effective, 'datetime64[D]').astype(np.int64)
  num = days.shape[0]
  family = codes(family)
  order = np.argsort(days, kind='stable')
  pos_of_row = np.empty(num, np.int64)
  pos_of_row[order] = np.arange(num)
  full = -(-num // chunk) * chunk
  family_by_pos = np.concatenate([family[order], np.full(full - num, -1)])
  row_by_pos = np.concatenate([order, np.full(full - num, num)])
  scorer.prepare(order, chunk)
  gallery_end = np.searchsorted(days[order], days[judged.queries], side='left')
  by_date = np.argsort(gallery_end, kind='stable')
  devices = len(jax.local_devices())
  most = -(-len(by_date) // devices) * devices
  ranks = np.zeros(judged.relevant.size, np.int64)
  i = 0
  while i < len(by_date):
    # rows per block: a function of the width alone (few compiled shapes), never more than all the queries
    rows_for = lambda w: max(devices, min(block_scores // w, most) // devices * devices)
    width = _bucket(int(gallery_end[by_date[i]]), chunk, full)
    while (wider := _bucket(int(gallery_end[by_date[min(i + rows_for(width), len(by_date)) - 1]]), chunk, full)) > width:
      width = wider
    rows = rows_for(width)
    block = by_date[i:i + rows]
    i += len(block)
    query_rows = np.concatenate([judged.queries[block], np.repeat(judged.queries[block[:1]], rows - len(block))])
    scores = np.asarray(scorer.scores(query_rows, width))  # (rows, width) on the host: the block's only copy
    in_gallery = (np.arange(width)[None, :] < gallery_end[block][:, None]) & (
        family_by_pos[None, :width] != family[judged.queries[block]][:, None])
    others = np.where(in_gallery, scores[:len(block)], np.inf)
    for b, q in enumerate(block):
      relevant = pos_of_row[judged.relevant_of(q)]
      others[b, relevant] = np.inf
    others.sort(axis=1)  # each row: its gallery's other patents ascending, then +inf
    counts = in_gallery.sum(axis=1) - np.diff(judged.offsets)[block]
    for b, q in enumerate(block):
      relevant = pos_of_row[judged.relevant_of(q)]
      ranks[judged.offsets[q]:judged.offsets[q + 1]] = _rank_in_gallery(
          scores[b], in_gallery[b], others[b, :counts[b]], relevant, row_by_pos)
  return ranks
