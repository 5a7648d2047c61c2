"""Every metric against scikit-learn or a plain NumPy re-computation, on random data with ties."""

import warnings

import numpy as np
import pytest

sklearn_metrics = pytest.importorskip('sklearn.metrics')

from designclip_jax.eval import metrics


def _norm(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference_retrieval(q, ql, g, gl, ks):
  """sklearn AP over the full gallery per query; Rank@k = 1 + non-relevant items scoring >= the best
  relevant one (a tie with a non-relevant item counts against the query).
  Scores are float32, as the tool computes them, so exact ties (repeated gallery vectors) stay ties:
  computed in float64 and rounded (a float32 BLAS product can round the same vector differently by its
  column position)."""
  sims = (_norm(q.astype(np.float32)).astype(np.float64) @ _norm(g.astype(np.float32)).astype(np.float64).T)
  sims = sims.astype(np.float32)
  aps, hits = [], {k: [] for k in ks}
  for i in range(len(q)):
    rel = gl == ql[i]
    if not rel.any():
      continue
    aps.append(sklearn_metrics.average_precision_score(rel, sims[i]))
    best = sims[i][rel].max()
    rank = 1 + (sims[i][~rel] >= best).sum()
    for k in ks:
      hits[k].append(rank <= k)
  return np.mean(aps), {k: np.mean(v) for k, v in hits.items()}


def _tied_data(rng, n_q, n_g, n_patents, dim, string_labels):
  # the gallery repeats a few vectors -> many exact ties (same vector, same score) across patents
  basis = rng.normal(size=(6, dim)).astype(np.float32)
  q = basis[rng.integers(0, 6, n_q)] + rng.normal(scale=0.3, size=(n_q, dim))
  g = basis[rng.integers(0, 6, n_g)]
  ql, gl = rng.integers(0, n_patents, n_q), rng.integers(0, n_patents, n_g)
  if string_labels:
    ql, gl = np.array([f'USD{x:07d}' for x in ql]), np.array([f'USD{x:07d}' for x in gl])
  return q.astype(np.float32), ql, g, gl


@pytest.mark.parametrize('string_labels', [False, True])
def test_image_retrieval_matches_sklearn_with_ties(string_labels):
  rng = np.random.default_rng(0)
  q, ql, g, gl = _tied_data(rng, 70, 300, 40, 8, string_labels)
  ks = (1, 5, 10, 20)
  ref_map, ref_rank = _reference_retrieval(q, ql, g, gl, ks)
  got = metrics.image_retrieval(q, ql, g, gl, ks=ks, query_chunk=16, gallery_chunk=64)
  assert got['mAP'] == pytest.approx(ref_map, abs=1e-6)
  for k in ks:
    assert got[f'rank@{k}'] == pytest.approx(ref_rank[k], abs=1e-9)
  no_rel = sum(1 for x in ql if x not in set(gl))
  assert got['queries_without_relevant'] == no_rel


def test_rank_at_k_with_a_duplicated_relevant_item():
  """The two best gallery items are the same relevant drawing filed twice: the first result is relevant,
  so Rank@1 = 1 (counting the duplicate as ranking above it gave rank 2)."""
  q = np.array([[1.0, 0.0, 0.0]], np.float32)
  g = np.array([[1, 0.1, 0], [1, 0.1, 0], [1, 0.3, 0], [0, 1, 0], [0, 0, 1]], np.float32)
  gl = np.array([7, 7, 3, 3, 7])
  got = metrics.image_retrieval(q, [7], g, gl, ks=(1, 2))
  assert got['rank@1'] == 1.0 and got['rank@2'] == 1.0
  assert got['precision_at_1'] == 1.0
  sims = _norm(q) @ _norm(g).T
  assert got['mAP'] == pytest.approx(sklearn_metrics.average_precision_score(gl == 7, sims[0]))
  # a non-relevant item tied with the best relevant one does count against the query
  g[2] = g[0]
  assert metrics.image_retrieval(q, [7], g, gl, ks=(1, 2))['rank@1'] == 0.0


def test_pml_variants_match_pytorch_metric_learning():
  pml = pytest.importorskip('pytorch_metric_learning.utils.accuracy_calculator')
  from pytorch_metric_learning.distances import CosineSimilarity
  from pytorch_metric_learning.utils.inference import CustomKNN
  rng = np.random.default_rng(5)
  centers = rng.normal(size=(30, 16))
  gl = rng.integers(0, 30, 400)
  gl[:12] = 4  # one large label: k = max_bin_count is well above most queries' R
  ql = rng.integers(0, 32, 90)  # labels 30, 31 have no gallery item (PML's "lone" queries)
  g = centers[gl] + rng.normal(scale=1.3, size=(400, 16))
  q = centers[ql % 30] + rng.normal(scale=1.3, size=(90, 16))
  calc = pml.AccuracyCalculator(include=('precision_at_1', 'mean_average_precision',
                                         'mean_average_precision_at_r'), k='max_bin_count',
                                knn_func=CustomKNN(CosineSimilarity()))
  ref = calc.get_accuracy(q.astype(np.float32), ql, g.astype(np.float32), gl, ref_includes_query=False)
  got = metrics.image_retrieval(q, ql, g, gl, query_chunk=32, gallery_chunk=128)
  assert got['precision_at_1'] == pytest.approx(ref['precision_at_1'], abs=1e-9)
  assert got['pml_map'] == pytest.approx(ref['mean_average_precision'], abs=1e-9)
  assert got['map_at_r'] == pytest.approx(ref['mean_average_precision_at_r'], abs=1e-9)
  assert got['pml_map'] != pytest.approx(got['mAP'], abs=1e-3)  # a different number from DeepPatent's mAP


def test_similarities_are_ranked_in_full_float32():
  """On TPU/GPU default precision is bf16 passes / TF32: every score that is ranked must ask for HIGHEST."""
  q, g = np.ones((4, 8), np.float32), np.ones((16, 8), np.float32)
  lowered = [metrics._similarities.lower(q, g).as_text(),
             metrics._pair_ranks.lower(q, g, 0).as_text()]
  for text in lowered:
    dots = [line for line in text.splitlines() if 'dot_general' in line]
    assert dots and all('HIGHEST' in line for line in dots), dots


def test_pair_ranks_compile_once_for_every_chunk():
  rng = np.random.default_rng(6)
  img, txt = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
  metrics._pair_ranks.clear_cache()
  metrics.multimodal_retrieval(img, txt, chunk=16)  # chunks at offsets 0, 16, 32, 48 (the last padded)
  assert metrics._pair_ranks._cache_size() == 1


def test_non_finite_embeddings_are_refused():
  q, g = np.ones((6, 4)), np.ones((5, 4))
  q[[2, 4]] = np.nan
  g[1, 0] = np.inf
  with pytest.raises(ValueError, match=r'query has 2 of 6 rows with NaN or Inf \(first rows: \[2, 4\]\)'):
    metrics.image_retrieval(q, np.arange(6), g, np.arange(5))
  with pytest.raises(ValueError, match=r'gallery has 1 of 5 rows with NaN or Inf \(first rows: \[1\]\)'):
    metrics.image_retrieval(np.ones((6, 4)), np.arange(6), g, np.arange(5))


def test_image_retrieval_chunked_equals_unchunked_on_continuous_data():
  rng = np.random.default_rng(1)
  q, g = rng.normal(size=(100, 32)), rng.normal(size=(500, 32))
  ql, gl = rng.integers(0, 50, 100), rng.integers(0, 50, 500)
  a = metrics.image_retrieval(q, ql, g, gl, query_chunk=7, gallery_chunk=33)
  b = metrics.image_retrieval(q, ql, g, gl, query_chunk=512, gallery_chunk=4096)
  ref_map, ref_rank = _reference_retrieval(q, ql, g, gl, metrics.RANKS)
  for key in ['mAP'] + [f'rank@{k}' for k in metrics.RANKS]:
    assert a[key] == pytest.approx(b[key], abs=1e-9)
  assert a['mAP'] == pytest.approx(ref_map, abs=1e-6)
  np.testing.assert_allclose(a['per_query_ap'], b['per_query_ap'], atol=1e-9)


def test_image_retrieval_bad_input():
  q, g = np.ones((3, 4)), np.ones((5, 4))
  with pytest.raises(ValueError, match='dimension'):
    metrics.image_retrieval(q, [0, 1, 2], np.ones((5, 3)), [0] * 5)
  with pytest.raises(ValueError, match='one label per row'):
    metrics.image_retrieval(q, [0, 1], g, [0] * 5)
  with pytest.raises(ValueError, match='empty'):
    metrics.image_retrieval(q, [0, 1, 2], np.ones((0, 4)), [])
  with pytest.raises(ValueError, match='no query has a relevant'):
    metrics.image_retrieval(q, [7, 8, 9], g, [0] * 5)


def test_multimodal_retrieval_against_numpy():
  rng = np.random.default_rng(2)
  img = rng.normal(size=(60, 16))
  txt = img + rng.normal(scale=1.5, size=(60, 16))
  txt[5] = txt[6]  # a tie
  got = metrics.multimodal_retrieval(img, txt, chunk=16)
  s = _norm(img) @ _norm(txt).T
  for name, sims in (('i2t', s), ('t2i', s.T)):
    own = np.diag(sims)
    ranks = 1 + np.array([(np.delete(sims[i], i) >= own[i]).sum() for i in range(len(own))])
    for k in (1, 5, 10):
      assert got[f'{name}_R@{k}'] == pytest.approx(np.mean(ranks <= k))
    assert got[f'{name}_mean_rank'] == pytest.approx(ranks.mean())
    assert got[f'{name}_median_rank'] == pytest.approx(np.median(ranks))


def test_zero_shot_against_sklearn():
  rng = np.random.default_rng(3)
  n, c, d = 400, 12, 24
  classes = rng.normal(size=(c, d))
  labels = rng.integers(0, c, n)
  labels[labels == 3] = 4  # a class absent from the test labels
  image = classes[labels] + rng.normal(scale=2.5, size=(n, d))
  counts = rng.integers(5, 500, c)
  got = metrics.zero_shot(image, labels, classes, counts)
  scores = _norm(image) @ _norm(classes).T
  pred = scores.argmax(1)
  assert got['top1'] == pytest.approx(sklearn_metrics.accuracy_score(labels, pred))
  assert got['top5'] == pytest.approx(sklearn_metrics.top_k_accuracy_score(labels, scores, k=5, labels=range(c)))
  # balanced accuracy over the classes present in the labels, as sklearn computes it
  present = np.unique(labels)
  recall = [np.mean(pred[labels == k] == k) for k in present]
  assert got['balanced_acc'] == pytest.approx(np.mean(recall))
  with warnings.catch_warnings():  # sklearn warns that predictions name a class absent from the labels
    warnings.simplefilter('ignore')
    assert got['balanced_acc'] == pytest.approx(sklearn_metrics.balanced_accuracy_score(labels, pred))
  order = np.argsort(-counts, kind='stable')
  for name, group in zip(('head', 'medium', 'tail'), np.array_split(order, 3)):
    mask = np.isin(labels, group)
    assert got[f'{name}_acc'] == pytest.approx(np.mean(pred[mask] == labels[mask]))


def test_linear_probe_close_to_sklearn_logistic_regression():
  from sklearn.linear_model import LogisticRegression
  rng = np.random.default_rng(4)
  centers = rng.normal(size=(5, 16))
  ytr, yte = rng.integers(0, 5, 300), rng.integers(0, 5, 200)
  xtr = centers[ytr] + rng.normal(scale=1.2, size=(300, 16))
  xte = centers[yte] + rng.normal(scale=1.2, size=(200, 16))
  l2 = 1e-3
  got = metrics.linear_probe(xtr, ytr, xte, yte, l2=l2)
  ref = LogisticRegression(C=1 / (l2 * len(ytr)), max_iter=5000).fit(_norm(xtr), ytr)
  ref_pred = ref.predict(_norm(xte))
  assert np.mean(got['probe_predictions'] == ref_pred) > 0.97
  assert got['probe_acc'] == pytest.approx(np.mean(ref_pred == yte), abs=0.02)
  assert got['probe_balanced_acc'] == pytest.approx(sklearn_metrics.balanced_accuracy_score(yte, got['probe_predictions']))
