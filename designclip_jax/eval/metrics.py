"""Evaluation metrics as pure functions of embedding and label arrays.

Similarities are computed in fixed-size chunks on the device (jit; query rows sharded over all local
devices when there are several), so neither a Q×G matrix nor a sort of the gallery is ever needed, and
in full float32 (``Precision.HIGHEST``: default precision is bf16 passes on TPU and TF32 on GPU, errors
of ~1e-4 that reorder a large gallery). Average precision is computed from the ranks of the relevant
items exactly as ``sklearn.metrics.average_precision_score`` defines it, ties included: for each
relevant item r, precision at r's score = #relevant scoring ≥ s_r / #items scoring ≥ s_r, averaged over r.
Embeddings with NaN or Inf rows are refused: they would score as ties, not as failures.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

RANKS = (1, 5, 10, 20, 50, 100)
HIGHEST = jax.lax.Precision.HIGHEST


def l2_normalize(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check_2d(name, x, dim=None):
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f'{name} must be a 2-D (n, dim) array, got shape {x.shape}')
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f'{name} has dimension {x.shape[1]}, expected {dim} (to match the other embeddings)')
  if x.shape[0] == 0:
    raise ValueError(f'{name} is empty')
  bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
  if bad.size:
    raise ValueError(f'{name} has {bad.size} of {x.shape[0]} rows with NaN or Inf (first rows: '
                     f'{bad[:5].tolist()}); refusing to score them (a diverged model?)')
  return x


def _check_labels(name, labels, n):
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] != n:
    raise ValueError(f'{name} has shape {labels.shape}; expected ({n},), one label per row')
  return labels


def _shard_rows(x):
  """Put a chunk of rows on the device(s): sharded over all local devices when they divide it."""
  devices = jax.local_devices()
  if len(devices) > 1 and x.shape[0] % len(devices) == 0:
    mesh = jax.sharding.Mesh(np.array(devices), ('rows',))
    return jax.device_put(x, NamedSharding(mesh, P('rows')))
  return jnp.asarray(x)


def _pad_rows(x, n, value=0):
  if x.shape[0] == n:
    return x
  pad = np.full((n - x.shape[0],) + x.shape[1:], value, x.dtype)
  return np.concatenate([x, pad])


# ----------------------------------------------------------------------------- image retrieval

@jax.jit
def _similarities(q, g):
  # The one place query-gallery scores are computed: both passes below reuse it, so a relevant item's
  # score and the scores it is compared with are rounded identically (ties stay ties).
  return jnp.dot(q, g.T, precision=HIGHEST, preferred_element_type=jnp.float32)


@jax.jit
def _gather_relevant(sims, rel_scores, rel_local, in_chunk):
  """Fill in the scores of relevant items that fall in this gallery chunk."""
  taken = jnp.take_along_axis(sims, jnp.clip(rel_local, 0, sims.shape[1] - 1), axis=1)
  return jnp.where(in_chunk, taken, rel_scores)


@jax.jit
def _count_nonrelevant_ge(sims, q_labels, rel_sorted, g_labels, g_valid):
  """For each query and each of its relevant scores (sorted ascending per row): how many non-relevant
  items of this chunk score at least as high. Each score is placed among the query's few relevant
  scores (O(log R), not a sort of the chunk), histogrammed, and summed from the top. Relevant items
  are counted separately, from the relevant scores themselves."""
  nonrel = g_valid[None, :] & (q_labels[:, None] != g_labels[None, :])
  x = jnp.where(nonrel, sims, -jnp.inf)  # masked entries are -inf: never >= a finite score
  r = rel_sorted.shape[1]
  below_or_equal = jax.vmap(lambda a, row: jnp.searchsorted(a, row, side='right'))(rel_sorted, x)
  hist = jax.vmap(lambda k: jnp.bincount(k, length=r + 1))(below_or_equal)
  at_least = jnp.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # at_least[j] = #scores ≥ the j-th relevant score
  return at_least[:, 1:]


@functools.partial(jax.jit, static_argnames='k')
def _merge_top_k(sims, g_index, g_valid, best_scores, best_index, k):
  """Running top-k (score, gallery index) per query, merged with this chunk's; ties keep the lower index."""
  scores, local = jax.lax.top_k(jnp.where(g_valid[None, :], sims, -jnp.inf), k)
  scores = jnp.concatenate([best_scores, scores], axis=1)
  index = jnp.concatenate([best_index, g_index[local]], axis=1)
  best_scores, pick = jax.lax.top_k(scores, k)
  return best_scores, jnp.take_along_axis(index, pick, axis=1)


def _pml_scores(knn_relevant, n_rel):
  """pytorch-metric-learning's AccuracyCalculator(k="max_bin_count") numbers from each query's top-k
  relevance (k = the largest gallery count of any query label) and its number R of relevant items."""
  hits = knn_relevant.astype(np.float64)
  precision_at_i = np.cumsum(hits, axis=1) * hits / np.arange(1, hits.shape[1] + 1)
  within_r = np.arange(hits.shape[1])[None, :] < n_rel[:, None]
  return {'precision_at_1': float(hits[:, 0].mean()),
          'pml_map': float(np.mean(precision_at_i.sum(1) / n_rel)),
          'map_at_r': float(np.mean((precision_at_i * within_r).sum(1) / n_rel))}


def image_retrieval(query, query_labels, gallery, gallery_labels, *, ks=RANKS, query_chunk=256,
                    gallery_chunk=8192) -> dict:
  """DeepPatent protocol: relevant = same label (patent) as the query; over the queries with ≥1 relevant
  gallery item:

  - ``mAP``: mean of sklearn's average precision over the whole gallery (DeepPatent's official number);
  - ``rank@k``: share of queries whose first relevant item ranks within k, where that rank is 1 + the
    number of non-relevant items scoring at least as high as the best relevant one (a tie with a
    non-relevant item counts against the query; a duplicate relevant item does not);
  - pytorch-metric-learning's ``AccuracyCalculator(k="max_bin_count")`` numbers, which the SWIN+ArcFace
    and PATENTCLIP retrieval code report (not comparable with ``mAP``): ``precision_at_1`` (the nearest
    item is relevant), ``pml_map`` (its mean_average_precision: precision at each relevant hit within
    the top k = the largest gallery count of one query label, summed and divided by the query's number
    R of relevant items, as in pytorch-metric-learning 2.x) and ``map_at_r`` (its
    mean_average_precision_at_r: the same within the top R). Ties among neighbours keep gallery order.

  Also per-query AP (NaN where no relevant item), the count of queries without one, and num_queries.
  """
  query = l2_normalize(_check_2d('query', query))
  gallery = l2_normalize(_check_2d('gallery', gallery, query.shape[1]))
  query_labels = _check_labels('query_labels', query_labels, query.shape[0])
  gallery_labels = _check_labels('gallery_labels', gallery_labels, gallery.shape[0])
  _, codes = np.unique(np.concatenate([query_labels, gallery_labels]).astype(str), return_inverse=True)
  q_codes, g_codes = codes[:query.shape[0]].astype(np.int32), codes[query.shape[0]:].astype(np.int32)

  order = np.argsort(g_codes, kind='stable')
  starts = np.searchsorted(g_codes[order], q_codes, side='left')
  ends = np.searchsorted(g_codes[order], q_codes, side='right')
  n_rel = ends - starts
  has_rel = n_rel > 0
  if not has_rel.any():
    raise ValueError('no query has a relevant gallery item: check that query and gallery labels match')
  r_max = int(n_rel.max())
  rel_index = np.full((query.shape[0], r_max), -1, np.int64)
  for i in np.flatnonzero(n_rel):
    rel_index[i, :n_rel[i]] = order[starts[i]:ends[i]]

  g_pad = _pad_rows(gallery, -(-gallery.shape[0] // gallery_chunk) * gallery_chunk)
  gl_pad = _pad_rows(g_codes, g_pad.shape[0], -1)
  valid = np.arange(g_pad.shape[0]) < gallery.shape[0]
  gallery_dev = jnp.asarray(g_pad)
  chunks = [slice(g0, g0 + gallery_chunk) for g0 in range(0, g_pad.shape[0], gallery_chunk)]
  ap = np.full(query.shape[0], np.nan)
  best_rank = np.full(query.shape[0], np.inf)
  knn_relevant = np.zeros((query.shape[0], r_max), bool)
  for q0 in range(0, query.shape[0], query_chunk):
    q = _pad_rows(query[q0:q0 + query_chunk], query_chunk)
    ql = _pad_rows(q_codes[q0:q0 + query_chunk], query_chunk, -2)
    ri = _pad_rows(rel_index[q0:q0 + query_chunk], query_chunk, -1)
    present = ri >= 0
    q_dev = _shard_rows(q)
    rel_dev = jnp.full(ri.shape, jnp.inf, jnp.float32)  # +inf: padding, never <= a real score
    for sl in chunks:
      local = ri - sl.start
      in_chunk = present & (local >= 0) & (local < gallery_chunk)
      rel_dev = _gather_relevant(_similarities(q_dev, gallery_dev[sl]), rel_dev, jnp.asarray(local),
                                 jnp.asarray(in_chunk))
    rel_dev = jnp.sort(rel_dev, axis=1)  # real scores first, +inf padding last; counts follow this order
    counts = np.zeros(ri.shape, np.int64)
    ql_dev = _shard_rows(ql)
    top_scores = jnp.full((query_chunk, r_max), -jnp.inf, jnp.float32)
    top_index = jnp.zeros((query_chunk, r_max), jnp.int32)
    for sl in chunks:
      sims = _similarities(q_dev, gallery_dev[sl])
      g_valid = jnp.asarray(valid[sl])
      counts += np.asarray(_count_nonrelevant_ge(sims, ql_dev, rel_dev, jnp.asarray(gl_pad[sl]), g_valid))
      top_scores, top_index = _merge_top_k(sims, jnp.arange(sl.start, sl.stop, dtype=jnp.int32), g_valid,
                                           top_scores, top_index, k=min(r_max, gallery.shape[0]))
    rel = np.asarray(rel_dev)
    n = min(query_chunk, query.shape[0] - q0)
    knn = np.asarray(top_index)[:n]
    knn_relevant[q0:q0 + n, :knn.shape[1]] = g_codes[knn] == q_codes[q0:q0 + n, None]
    for j in range(n):
      r = int(n_rel[q0 + j])
      if r == 0:
        continue
      s = rel[j, :r]
      rel_ge = (s[None, :] >= s[:, None]).sum(1)  # relevant items scoring ≥ each relevant score
      ap[q0 + j] = float(np.mean(rel_ge / (rel_ge + counts[j, :r])))
      best_rank[q0 + j] = 1 + counts[j, r - 1]  # s is ascending: s[r-1] is the best relevant score
  out = {'mAP': float(np.mean(ap[has_rel]))}
  for k in ks:
    out[f'rank@{k}'] = float(np.mean(best_rank[has_rel] <= k))
  out.update(_pml_scores(knn_relevant[has_rel], n_rel[has_rel]))
  out['queries_without_relevant'] = int((~has_rel).sum())
  out['num_queries'] = int(has_rel.sum())
  out['per_query_ap'] = ap
  return out


# ----------------------------------------------------------------------------- multimodal retrieval

@jax.jit
def _pair_ranks(rows, cols, offset):
  # offset is traced (not static): one program for every chunk; padded rows (beyond cols) are dropped
  sims = jnp.dot(rows, cols.T, precision=HIGHEST, preferred_element_type=jnp.float32)
  idx = jnp.arange(rows.shape[0])
  own = jnp.take_along_axis(sims, jnp.minimum(offset + idx, cols.shape[0] - 1)[:, None], axis=1)
  others = jnp.arange(cols.shape[0])[None, :] != (offset + idx)[:, None]
  return 1 + jnp.sum(others & (sims >= own), axis=1)  # ties count against the pair


def _ranks(rows, cols, chunk):
  chunk = min(chunk, rows.shape[0])
  cols_dev = jnp.asarray(cols)
  ranks = [np.asarray(_pair_ranks(jnp.asarray(_pad_rows(rows[r0:r0 + chunk], chunk)), cols_dev, r0))
           for r0 in range(0, rows.shape[0], chunk)]
  return np.concatenate(ranks)[:rows.shape[0]]


def multimodal_retrieval(image, text, *, ks=(1, 5, 10), chunk=1024) -> dict:
  """Row i of ``image`` and ``text`` is a pair and each one's only positive. R@k, mean and median rank
  (1-based) for text→image and image→text."""
  image = l2_normalize(_check_2d('image', image))
  text = l2_normalize(_check_2d('text', text, image.shape[1]))
  if text.shape[0] != image.shape[0]:
    raise ValueError(f'image has {image.shape[0]} rows but text has {text.shape[0]}: rows must be pairs')
  out = {}
  for name, rows, cols in (('t2i', text, image), ('i2t', image, text)):
    ranks = _ranks(rows, cols, chunk)
    for k in ks:
      out[f'{name}_R@{k}'] = float(np.mean(ranks <= k))
    out[f'{name}_mean_rank'] = float(np.mean(ranks))
    out[f'{name}_median_rank'] = float(np.median(ranks))
  return out


# ----------------------------------------------------------------------------- zero-shot classification

def head_medium_tail(class_counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Class indices split into thirds by train frequency, most frequent first (ties by index)."""
  order = np.argsort(-np.asarray(class_counts), kind='stable')
  head, medium, tail = np.array_split(order, 3)
  return head, medium, tail


def classification_scores(logits, labels, class_counts=None) -> dict:
  """top-1/top-5 (a tie with the true class counts as a hit, like sklearn's stable ordering would
  only for lower indices: use continuous scores), class-balanced accuracy over classes present, and
  head/medium/tail accuracy, plus per-class accuracy."""
  logits = np.asarray(logits, np.float32)
  labels = np.asarray(labels).astype(np.int64)
  n, c = logits.shape
  if labels.shape != (n,):
    raise ValueError(f'labels has shape {labels.shape}; expected ({n},)')
  if labels.min() < 0 or labels.max() >= c:
    raise ValueError(f'labels must index the {c} classes')
  true = logits[np.arange(n), labels]
  rank = (logits > true[:, None]).sum(1)
  pred = logits.argmax(1)
  correct = pred == labels
  present = np.unique(labels)
  per_class = np.full(c, np.nan)
  for k in present:
    per_class[k] = correct[labels == k].mean()
  out = {'top1': float(correct.mean()), 'top5': float((rank < 5).mean()),
         'balanced_acc': float(np.nanmean(per_class[present])), 'per_class_acc': per_class,
         'per_class_n': np.bincount(labels, minlength=c)}
  if class_counts is not None:
    if len(class_counts) != c:
      raise ValueError(f'class_counts has {len(class_counts)} entries for {c} classes')
    for name, group in zip(('head', 'medium', 'tail'), head_medium_tail(class_counts)):
      mask = np.isin(labels, group)
      out[f'{name}_acc'] = float(correct[mask].mean()) if mask.any() else float('nan')
  return out


def zero_shot(image, labels, class_embeddings, class_counts=None) -> dict:
  """Cosine similarity of each image to each class prompt embedding, then classification_scores."""
  image = l2_normalize(_check_2d('image', image))
  classes = l2_normalize(_check_2d('class_embeddings', class_embeddings, image.shape[1]))
  labels = _check_labels('labels', labels, image.shape[0])
  return classification_scores(image @ classes.T, labels, class_counts)


# ----------------------------------------------------------------------------- linear probe

def linear_probe(train_x, train_y, test_x, test_y, *, num_classes=None, l2=1e-4, steps=300) -> dict:
  """Multinomial logistic regression on frozen, L2-normalised features (full-batch L-BFGS in optax)."""
  import optax  # pylint: disable=import-outside-toplevel
  train_x = l2_normalize(_check_2d('train features', train_x))
  test_x = l2_normalize(_check_2d('test features', test_x, train_x.shape[1]))
  train_y = _check_labels('train labels', train_y, train_x.shape[0]).astype(np.int32)
  test_y = _check_labels('test labels', test_y, test_x.shape[0]).astype(np.int32)
  c = int(num_classes or max(train_y.max(), test_y.max()) + 1)
  x, y = jnp.asarray(train_x), jnp.asarray(train_y)

  def loss(params):
    logits = x @ params['w'] + params['b']
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2 * jnp.sum(params['w'] ** 2)

  params = {'w': jnp.zeros((x.shape[1], c)), 'b': jnp.zeros((c,))}
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def update(params, state):
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(params, updates), state

  state = solver.init(params)
  for _ in range(steps):
    params, state = update(params, state)
  logits = np.asarray(jnp.asarray(test_x) @ params['w'] + params['b'])
  scores = classification_scores(logits, test_y)
  return {'probe_acc': scores['top1'], 'probe_balanced_acc': scores['balanced_acc'],
          'probe_predictions': logits.argmax(1)}
