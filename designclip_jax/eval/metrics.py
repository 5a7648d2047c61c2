"""Evaluation metrics as pure functions of embedding and label arrays.

Image retrieval follows DeepPatent's official evaluation (GoFigure-LANL/DeepPatent-dataset,
``src/dirtorch``) exactly, on scores ranked in full float32 (``ranking``): neither a Q×G matrix nor a
second copy of the gallery is ever held. Exact ties between a relevant and a non-relevant item are broken
by gallery order (a stable sort); the official ``argsort(-scores)`` is numpy's default, unstable sort, so
the two can differ only there. Every rank in this module uses that one tie rule. Embeddings with NaN or
Inf rows are refused: they would score as ties, not as failures.
"""

from __future__ import annotations

import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from designclip_jax.eval import ranking

RANKS = (1, 5, 10, 20, 50, 100)
CHECK_ROWS = 2048  # rows checked, hashed or compared at a time: no temporary the size of the gallery
WITHOUT_RELEVANT = ('misses in rank@k (averaged over all num_queries); left out of mAP, precision_at_1, pml_map and '
                    'map_at_r (DeepPatent src/dirtorch/test_dir.py eval_model)')


def l2_normalize(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check_2d(name, x, dim=None):
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f'{name} must be a 2-D (n, dim) array, got shape {x.shape}')
  if x.dtype.kind not in 'biuf':
    raise ValueError(f'{name} must hold numbers, got dtype {x.dtype}')
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f'{name} has dimension {x.shape[1]}, expected {dim} (to match the other embeddings)')
  if x.shape[0] == 0:
    raise ValueError(f'{name} is empty')
  bad = np.concatenate([r + np.flatnonzero(~np.isfinite(x[r:r + CHECK_ROWS]).all(axis=1))
                        for r in range(0, x.shape[0], CHECK_ROWS)])
  if bad.size:
    raise ValueError(f'{name} has {bad.size} of {x.shape[0]} rows with NaN or Inf (first rows: '
                     f'{bad[:5].tolist()}); refusing to score them (a diverged model?)')
  return x


def _check_labels(name, labels, n):
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] != n:
    raise ValueError(f'{name} has shape {labels.shape}; expected ({n},), one label per row')
  return labels


# ----------------------------------------------------------------------------- image retrieval

def _label_kind(value) -> str:
  return ('text' if isinstance(value, (str, bytes, np.str_, np.bytes_)) else
          'number' if isinstance(value, (numbers.Number, np.number, np.bool_)) else type(value).__name__)


def _retrieval_labels(name, labels, n):
  """Labels as a text or number array. A list keeps its items' types (numpy would turn [1, '001'] into text)."""
  labels = np.asarray(labels, dtype=object) if isinstance(labels, (list, tuple)) else np.asarray(labels)
  labels = _check_labels(name, labels, n)
  if labels.dtype == object:
    kinds = sorted({_label_kind(v) for v in labels})
    if len(kinds) != 1 or kinds[0] not in ('text', 'number'):
      raise ValueError(f'{name} mixes {" and ".join(kinds)} labels: labels are compared by value, so write '
                       'all of them one way')
    labels = np.array(labels.tolist())
  if labels.dtype.kind == 'S':
    labels = np.char.decode(labels, 'utf-8')
  if labels.dtype.kind not in 'Ubiuf':
    raise ValueError(f'{name} must be text or numbers, got dtype {labels.dtype}')
  if labels.dtype.kind == 'f' and np.isnan(labels).any():
    raise ValueError(f'{name} has NaN labels (row {int(np.flatnonzero(np.isnan(labels))[0])})')
  return labels


def label_codes(query_labels, gallery_labels, num_query: int, num_gallery: int) -> tuple[np.ndarray, np.ndarray]:
  """Integer codes, equal where labels are equal by value: numbers as numbers (1 == 1.0), text as text
  ('001' != '1'). Numbers on one side and text on the other are refused, never silently unmatched."""
  q = _retrieval_labels('query_labels', query_labels, num_query)
  g = _retrieval_labels('gallery_labels', gallery_labels, num_gallery)
  if (q.dtype.kind == 'U') != (g.dtype.kind == 'U'):
    text, other = ('query_labels', 'gallery_labels') if q.dtype.kind == 'U' else ('gallery_labels', 'query_labels')
    example = (q if text == 'query_labels' else g)[0]
    raise ValueError(f'{text} are text (e.g. {str(example)!r}) but {other} are numbers: labels are compared by value, '
                     f'so text never matches a number; write both sides the same way')
  _, codes = np.unique(np.concatenate([q, g]), return_inverse=True)
  return codes[:num_query].astype(np.int64), codes[num_query:].astype(np.int64)


def _row_fingerprints(x, codes) -> np.ndarray:
  """A 64-bit hash of each row's float32 bits and its label code: equal rows of one label hash equally."""
  weights = (np.arange(1, x.shape[1] + 2, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
  out = np.empty(x.shape[0], np.uint64)
  for r in range(0, x.shape[0], CHECK_ROWS):
    bits = np.ascontiguousarray(x[r:r + CHECK_ROWS], np.float32).view(np.uint32).astype(np.uint64)
    out[r:r + CHECK_ROWS] = bits @ weights[:-1] + codes[r:r + CHECK_ROWS].astype(np.uint64) * weights[-1]
  return out


def queries_in_gallery(query, q_codes, gallery, g_codes) -> int:
  """How many queries are also a gallery row: the same embedding under the same label (each would find
  itself first)."""
  qf, gf = _row_fingerprints(query, q_codes), _row_fingerprints(gallery, g_codes)
  order = np.argsort(gf)
  at = np.minimum(np.searchsorted(gf[order], qf), gf.size - 1)
  candidates = np.flatnonzero(gf[order[at]] == qf)
  found = 0
  for c in range(0, candidates.size, CHECK_ROWS):  # the hash says equal: confirm on the rows themselves
    rows = candidates[c:c + CHECK_ROWS]
    found += int(np.count_nonzero((query[rows] == gallery[order[at[rows]]]).all(axis=1)))
  return found


def _check_leave_one_out(query, q_codes, gallery, g_codes):
  n = query.shape[0]
  if (n > gallery.shape[0] or not np.array_equal(q_codes, g_codes[:n])
      or not all(np.array_equal(query[r:r + CHECK_ROWS], gallery[r:r + CHECK_ROWS]) for r in range(0, n, CHECK_ROWS))):
    raise ValueError('leave_one_out needs the queries to be the first gallery rows (query i is gallery row i, '
                     "same label), as pytorch-metric-learning's ref_includes_query")


def image_retrieval(query, query_labels, gallery, gallery_labels, *, ks=RANKS, leave_one_out=False,
                    query_chunk=None, gallery_chunk=8192) -> dict:
  """Relevant = the query's label (its patent, for DeepPatent), labels compared by value.

  DeepPatent's official numbers (``src/dirtorch`` of GoFigure-LANL/DeepPatent-dataset):

  - ``mAP``: mean over the queries with ≥1 relevant item of scikit-learn's average precision over the
    whole gallery (``datasets/dataset.py`` ``eval_query_AP`` → ``utils/evaluation.py`` ``compute_AP``;
    ``test_dir.py`` ``eval_model`` leaves the others, AP -1, out);
  - ``rank@k``: share of ALL queries with a relevant item among the first k of the gallery sorted by
    score (``eval_query_top``, averaged by ``eval_model``: a query without a relevant item is a miss);
    None (undefined) for k ≥ the ranked gallery size, which the official code leaves out.

  pytorch-metric-learning's ``AccuracyCalculator(k="max_bin_count")`` numbers, which the SWIN+ArcFace and
  PATENTCLIP retrieval code report (not comparable with ``mAP``), over the queries with ≥1 relevant item:
  ``precision_at_1``, ``pml_map`` (its mean_average_precision: precision at each relevant hit within the
  top k = the largest gallery count of one query label, summed and divided by the query's number R of
  relevant items, as in pytorch-metric-learning 2.x) and ``map_at_r`` (the same within the top R).

  ``leave_one_out``: the queries are the first gallery rows (a query set that is the gallery: query i is
  gallery row i) and each query's own row is left out of its ranking, as pytorch-metric-learning's
  ``ref_includes_query`` and DeepPatent's ``get_query_groundtruth`` (which marks it junk) do. Without it,
  a query set that lies wholly in the gallery (same embedding, same label) is refused: each query would
  find itself first; some queries in the gallery give a warning and ``queries_in_gallery``.

  Also ``per_query_ap`` (NaN where no relevant item), ``queries_without_relevant`` and ``num_queries``.
  """
  query = _check_2d('query', query)
  gallery = _check_2d('gallery', gallery, query.shape[1])
  q_codes, g_codes = label_codes(query_labels, gallery_labels, query.shape[0], gallery.shape[0])
  num_query, num_gallery = query.shape[0], gallery.shape[0]
  out = {}
  if leave_one_out:
    _check_leave_one_out(query, q_codes, gallery, g_codes)
  else:
    found = queries_in_gallery(query, q_codes, gallery, g_codes)
    if found == num_query:
      raise ValueError(f'all {num_query} queries are gallery rows too (same embedding, same label): each would find '
                       'itself first. For a query set that is the gallery use leave_one_out (CLI --leave-one-out)')
    if found:
      warnings.warn(f'{found} of {num_query} queries are also gallery rows (same embedding, same label): they find '
                    'themselves first', stacklevel=2)
    out['queries_in_gallery'] = found

  own = np.arange(num_query) if leave_one_out else np.full(num_query, -1)
  order = np.argsort(g_codes, kind='stable')  # gallery rows grouped by label, ascending within a label
  starts = np.searchsorted(g_codes[order], q_codes, side='left')
  ends = np.searchsorted(g_codes[order], q_codes, side='right')
  n_rel = ends - starts - (own >= 0)
  has_rel = n_rel > 0
  if not has_rel.any():
    raise ValueError('no query has a relevant gallery item: check that query and gallery labels match')
  pml_k = int(n_rel.max())  # pytorch-metric-learning's max_bin_count (less the query itself)
  ap, pml_ap, map_at_r = (np.full(num_query, np.nan) for _ in range(3))
  first = np.zeros(num_query, np.int64)  # 1-based place of the first relevant item; 0: none

  def relevant(i):  # query i's relevant gallery rows, ascending, its own row left out
    rows = order[starts[i]:ends[i]]
    return rows[rows != own[i]]
  for i, scores, at_least, position in ranking.ranked_relevant(query, gallery, relevant, own, query_chunk=query_chunk,
                                                                gallery_chunk=gallery_chunk):
    relevant_at_least = np.searchsorted(-scores, -scores, side='right')  # scores run high to low
    ap[i] = np.mean(relevant_at_least / (relevant_at_least + at_least))  # scikit-learn's AP, ties included
    first[i] = position[0]
    precision = np.arange(1, scores.size + 1) / position  # at each relevant hit, in ranked order
    pml_ap[i] = precision[position <= pml_k].sum() / scores.size
    map_at_r[i] = precision[position <= scores.size].sum() / scores.size
  ranked = num_gallery - int(leave_one_out)  # items each query is ranked against
  out['mAP'] = float(np.mean(ap[has_rel]))
  for k in ks:
    out[f'rank@{k}'] = float(np.mean(has_rel & (first <= k))) if k < ranked else float('nan')
  out.update(precision_at_1=float(np.mean(first[has_rel] == 1)), pml_map=float(np.mean(pml_ap[has_rel])),
             map_at_r=float(np.mean(map_at_r[has_rel])), queries_without_relevant=int((~has_rel).sum()),
             num_queries=num_query, per_query_ap=ap)
  if not has_rel.all():
    out['queries_without_relevant_counted_as'] = WITHOUT_RELEVANT
  return out


# ----------------------------------------------------------------------------- multimodal retrieval

@jax.jit
def _pair_ranks(rows, cols, offset):
  # offset is traced (not static): one program for every chunk; padded rows (beyond cols) are dropped
  sims = jnp.dot(rows, cols.T, precision=ranking.HIGHEST, preferred_element_type=jnp.float32)
  own_col = offset + jnp.arange(rows.shape[0])
  own = jnp.take_along_axis(sims, jnp.minimum(own_col, cols.shape[0] - 1)[:, None], axis=1)
  col = jnp.arange(cols.shape[0])[None, :]
  # a stable sort's place: higher scores first, then equal scores at lower indices (identical captions)
  return 1 + jnp.sum((sims > own) | ((sims == own) & (col < own_col[:, None])), axis=1)


def _ranks(rows, cols, chunk):
  chunk = min(chunk, rows.shape[0])
  cols_dev = jnp.asarray(cols)
  ranks = [np.asarray(_pair_ranks(jnp.asarray(ranking.pad_rows(rows[r0:r0 + chunk], chunk)), cols_dev, r0))
           for r0 in range(0, rows.shape[0], chunk)]
  return np.concatenate(ranks)[:rows.shape[0]]


def multimodal_retrieval(image, text, *, ks=(1, 5, 10), chunk=1024) -> dict:
  """Row i of ``image`` and ``text`` is a pair and each one's only positive. R@k, mean and median rank
  (1-based) for text→image and image→text. A tie (identical captions, duplicate images) falls as a stable
  sort of the scores puts it: the lower row first, the rule of every rank here (CLIP_benchmark's
  ``torch.topk`` leaves the order of ties unspecified)."""
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
