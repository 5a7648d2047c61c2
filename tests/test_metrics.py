"""Every metric against an independent reference: DeepPatent's official evaluation re-written here,
scikit-learn, pytorch-metric-learning, or a plain NumPy re-computation, on data with exact ties."""

import tracemalloc
import warnings

import jax
import numpy as np
import pytest

sklearn_metrics = pytest.importorskip('sklearn.metrics')

from designclip_jax.eval import metrics, ranking
from tests.eval_helpers import deeppatent_official


def _norm(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _tool_scores(q, g, rows, chunk):
  """The float32 scores image_retrieval ranks (same blocks, same chunks): the references below rank these
  very numbers, so exact ties and 1-ulp near-ties are the same ties for both."""
  chunks = ranking.GalleryChunks(g, chunk, keep=False)
  scores = np.concatenate([b.copy() for _, b in ranking.score_blocks(q, chunks, rows)])
  np.testing.assert_allclose(scores, _norm(np.float64(q)) @ _norm(np.float64(g)).T, atol=2e-6)  # cosines
  return scores


def _pml_accuracy(query, query_labels, reference=None, reference_labels=None):
  """pytorch-metric-learning's AccuracyCalculator(k="max_bin_count") with cosine similarity; no reference:
  the queries are the reference, each one's own row left out (ref_includes_query)."""
  pml = pytest.importorskip('pytorch_metric_learning.utils.accuracy_calculator')
  from pytorch_metric_learning.distances import CosineSimilarity
  from pytorch_metric_learning.utils.inference import CustomKNN
  calc = pml.AccuracyCalculator(include=('precision_at_1', 'mean_average_precision', 'mean_average_precision_at_r'),
                                k='max_bin_count', knn_func=CustomKNN(CosineSimilarity()))
  if reference is None:
    return calc.get_accuracy(query, query_labels)
  return calc.get_accuracy(query, query_labels, reference, reference_labels, ref_includes_query=False)


def _check_against_pml(got, expected, tolerance=1e-9):
  for ours, theirs in (('precision_at_1', 'precision_at_1'), ('pml_map', 'mean_average_precision'),
                       ('map_at_r', 'mean_average_precision_at_r')):
    assert got[ours] == pytest.approx(expected[theirs], abs=tolerance), ours


def _check_against_official(got, ref, per_query_ap, ks):
  assert got['mAP'] == pytest.approx(ref['mAP'], abs=1e-12)
  np.testing.assert_allclose(got['per_query_ap'], per_query_ap, atol=1e-12)  # NaN where no relevant item
  for k in ks:
    if f'rank@{k}' in ref:
      assert got[f'rank@{k}'] == ref[f'rank@{k}'], k
    else:  # the official code leaves k >= the gallery size out
      assert np.isnan(got[f'rank@{k}']), k


def _hard_case(rng, string_labels):
  """Exact ties (the gallery repeats 6 drawings, under many patents: a drawing filed twice), 1-ulp
  near-ties (copies moved by 1e-7) and queries of patents with no gallery item (labels 40-44)."""
  dim = 8
  basis = rng.normal(size=(6, dim)).astype(np.float32)
  g = basis[rng.integers(0, 6, 300)]
  g[::5] *= 1 + 1e-7 * rng.normal(size=(60, dim)).astype(np.float32)
  q = (basis[rng.integers(0, 6, 70)] + rng.normal(scale=0.3, size=(70, dim))).astype(np.float32)
  ql, gl = rng.integers(0, 45, 70), rng.integers(0, 40, 300)
  if string_labels:
    ql, gl = np.array([f'USD{x:07d}' for x in ql]), np.array([f'USD{x:07d}' for x in gl])
  return q, ql, g, gl


@pytest.mark.parametrize('string_labels', [False, True])
def test_image_retrieval_is_deeppatents_official_evaluation(string_labels):
  rng = np.random.default_rng(0)
  q, ql, g, gl = _hard_case(rng, string_labels)
  ks = (1, 5, 10, 20, 299, 300, 400)  # the last two: not below the gallery size, left out officially
  got = metrics.image_retrieval(q, ql, g, gl, ks=ks, query_chunk=16, gallery_chunk=64)
  scores = _tool_scores(q, g, 16, 64)
  ties = [(np.unique(s, return_counts=True)[1] > 1).sum() for s in scores]
  assert min(ties) > 0  # every row has exact ties
  ref, per_query_ap = deeppatent_official(scores, ql, gl, ks)
  _check_against_official(got, ref, per_query_ap, ks)
  unmatched = int(np.sum(~np.isin(ql, gl)))
  assert unmatched > 0 and got['queries_without_relevant'] == unmatched and got['num_queries'] == 70
  assert 'misses in rank@k' in got['queries_without_relevant_counted_as']


def test_a_drawing_filed_under_two_patents_falls_by_gallery_order():
  """The query's patent A and another patent B hold the same drawing: the tie is broken by gallery order,
  as a stable argsort(-scores) breaks it. rank@1 and precision_at_1 now agree (a tie used to count
  against the query whichever came first)."""
  q = np.array([[1.0, 0.0, 0.0]], np.float32)
  drawing, other, far = [1, 0.2, 0], [1, 0.5, 0], [0, 0, 1]
  for labels, expect_top1 in ((['B', 'A', 'A', 'C'], 0.0), (['A', 'B', 'A', 'C'], 1.0)):
    got = metrics.image_retrieval(q, ['A'], np.array([drawing, drawing, other, far], np.float32), labels, ks=(1, 2))
    assert got['rank@1'] == got['precision_at_1'] == expect_top1
    assert got['rank@2'] == 1.0
    # scikit-learn's AP gives the tie one threshold: precision 1/2 at the drawing, 2/3 at `other`
    assert got['mAP'] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_queries_without_relevant_items_are_misses_in_rank_at_k_only():
  g = np.eye(4, dtype=np.float32)
  q = np.eye(4, dtype=np.float32)[[0, 1]] + 0.1
  got = metrics.image_retrieval(q, [7, 9], g, [7, 8, 8, 8], ks=(1, 3))
  assert got['rank@1'] == 0.5 and got['rank@3'] == 0.5  # query 2 (label 9) is a miss at every k
  assert got['mAP'] == 1.0 and got['precision_at_1'] == 1.0  # over the one query with a relevant item
  assert got['queries_without_relevant'] == 1 and got['num_queries'] == 2
  assert np.isnan(got['per_query_ap'][1])


def test_more_than_a_chunk_of_items_per_label_matches_the_official_code_and_pml():
  """Class-level retrieval: one label holds 12,000 gallery items, more than a gallery chunk (8,192: the
  per-chunk top-k crashed there)."""
  rng = np.random.default_rng(7)
  centers = rng.normal(size=(3, 8))
  gl = np.r_[np.zeros(12000, int), rng.integers(1, 3, 4000)]
  ql = rng.integers(0, 3, 12)
  g = (centers[gl] + rng.normal(scale=2.0, size=(16000, 8))).astype(np.float32)
  q = (centers[ql] + rng.normal(scale=2.0, size=(12, 8))).astype(np.float32)
  got = metrics.image_retrieval(q, ql, g, gl)
  rows = ranking.block_rows(12, 16000)
  ref, per_query_ap = deeppatent_official(_tool_scores(q, g, rows, 8192), ql, gl, metrics.RANKS)
  _check_against_official(got, ref, per_query_ap, metrics.RANKS)
  # 16,000 scores in [-1, 1]: torch's float32 cosines and ours may swap neighbours ~1e-8 apart deep in the list
  _check_against_pml(got, _pml_accuracy(q, ql, g, gl), tolerance=1e-7)


def test_the_gallery_is_held_once():
  """No host copy of the gallery (normalised, padded, cast) and no device copy of it: on CPU, device
  memory is host memory. Measured: numpy allocations (tracemalloc) and live device arrays."""
  rng = np.random.default_rng(8)
  g = rng.standard_normal((60000, 64), dtype=np.float32)  # 14.6 MiB
  gl, q, ql = rng.integers(0, 500, 60000), rng.standard_normal((16, 64), dtype=np.float32), rng.integers(0, 500, 16)
  device_bytes = []
  similarities = ranking.similarities

  def measured(*args):
    device_bytes.append(sum(x.nbytes for x in jax.live_arrays()))
    return similarities(*args)
  run = lambda: metrics.image_retrieval(q, ql, g, gl, query_chunk=4, gallery_chunk=2048)  # 2 x 4 x G scores
  run()  # compile first: the run below is measured
  baseline = sum(x.nbytes for x in jax.live_arrays())
  ranking.similarities = measured
  tracemalloc.start()
  try:
    got = run()
    host_peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
    ranking.similarities = similarities
  assert host_peak < g.nbytes / 2, host_peak
  assert max(device_bytes) - baseline < g.nbytes / 10, (max(device_bytes), baseline)
  assert got['num_queries'] == 16


def test_gallery_kept_on_device_scores_the_same(monkeypatch):
  """The accelerator path (every chunk placed once and kept) against the CPU path (copied when used)."""
  rng = np.random.default_rng(9)
  q, ql, g, gl = _hard_case(rng, False)
  streamed = metrics.image_retrieval(q, ql, g, gl, query_chunk=16, gallery_chunk=64)
  monkeypatch.setattr(ranking, 'keep_gallery_on_device', lambda: True)
  kept = metrics.image_retrieval(q, ql, g, gl, query_chunk=16, gallery_chunk=64)
  np.testing.assert_array_equal(kept.pop('per_query_ap'), streamed.pop('per_query_ap'))
  assert kept == streamed


def test_leave_one_out_matches_pytorch_metric_learning_and_the_official_junk_rule():
  rng = np.random.default_rng(10)
  centers = rng.normal(size=(25, 16))
  labels = rng.integers(0, 25, 300)
  labels[0] = 99  # alone: no relevant item once its own row is left out
  x = (centers[labels % 25] + rng.normal(scale=1.2, size=(300, 16))).astype(np.float32)
  got = metrics.image_retrieval(x, labels, x, labels, leave_one_out=True, query_chunk=32, gallery_chunk=128)
  _check_against_pml(got, _pml_accuracy(x, labels))  # no reference: ref_includes_query=True
  ref, per_query_ap = deeppatent_official(_tool_scores(x, x, 32, 128), labels, labels, metrics.RANKS,
                                           own=np.arange(300))
  _check_against_official(got, ref, per_query_ap, metrics.RANKS)
  assert got['queries_without_relevant'] == 1 and 'queries_in_gallery' not in got
  # a query set that is not the gallery's first rows is refused
  with pytest.raises(ValueError, match="ref_includes_query"):
    metrics.image_retrieval(x[1:], labels[1:], x, labels, leave_one_out=True)


def test_a_query_set_inside_the_gallery_is_refused_without_leave_one_out():
  """Random vectors scored rank@1 = 1.0 when the query set was the gallery: each query found itself."""
  rng = np.random.default_rng(11)
  x, labels = rng.normal(size=(50, 8)), rng.integers(0, 10, 50)
  for q, ql in ((x, labels), (x[20:30], labels[20:30])):
    with pytest.raises(ValueError, match=r'queries are gallery rows too .* leave_one_out \(CLI --leave-one-out\)'):
      metrics.image_retrieval(q, ql, x, labels)
  q = np.concatenate([x[:3], rng.normal(size=(7, 8))])
  ql = np.r_[labels[:2], labels[2] + 1, labels[:7]]  # query 2: the same drawing under another label
  with pytest.warns(UserWarning, match='2 of 10 queries are also gallery rows'):
    assert metrics.image_retrieval(q, ql, x, labels)['queries_in_gallery'] == 2


def test_labels_compare_by_value_and_mixed_types_are_refused():
  rng = np.random.default_rng(12)
  q, g = rng.normal(size=(4, 8)), rng.normal(size=(30, 8))
  gl = rng.integers(1, 5, 30)
  as_int = metrics.image_retrieval(q, [1, 2, 3, 4], g, gl)
  assert as_int['queries_without_relevant'] == 0
  for ql, glabels in (([1.0, 2.0, 3.0, 4.0], gl), (np.array([b'1', b'2', b'3', b'4']), gl.astype(str))):
    same = metrics.image_retrieval(q, ql, g, glabels)
    np.testing.assert_array_equal(same.pop('per_query_ap'), as_int['per_query_ap'])
    assert same['mAP'] == as_int['mAP']
  with pytest.raises(ValueError, match=r"query_labels are text \(e.g. '001'\) but gallery_labels are numbers"):
    metrics.image_retrieval(q, np.array(['001', '002', '003', '004']), g, gl)
  with pytest.raises(ValueError, match='gallery_labels are text'):
    metrics.image_retrieval(q, [1, 2, 3, 4], g, gl.astype(str))
  with pytest.raises(ValueError, match='query_labels mixes number and text labels'):
    metrics.image_retrieval(q, ['001', 2, 3, 4], g, gl)
  # '001' and '1' are different text, as in DeepPatent's list files
  assert metrics.image_retrieval(q, ['001', '2', '3', '4'], g, gl.astype(str))['queries_without_relevant'] == 1


def test_pml_variants_match_pytorch_metric_learning():
  rng = np.random.default_rng(5)
  centers = rng.normal(size=(30, 16))
  gl = rng.integers(0, 30, 400)
  gl[:12] = 4  # one large label: k = max_bin_count is well above most queries' R
  ql = rng.integers(0, 32, 90)  # labels 30, 31 have no gallery item (PML's "lone" queries)
  g = centers[gl] + rng.normal(scale=1.3, size=(400, 16))
  q = centers[ql % 30] + rng.normal(scale=1.3, size=(90, 16))
  got = metrics.image_retrieval(q, ql, g, gl, query_chunk=32, gallery_chunk=128)
  _check_against_pml(got, _pml_accuracy(q.astype(np.float32), ql, g.astype(np.float32), gl))
  assert got['pml_map'] != pytest.approx(got['mAP'], abs=1e-3)  # a different number from DeepPatent's mAP


def test_similarities_are_ranked_in_full_float32():
  """On TPU/GPU default precision is bf16 passes / TF32: every score that is ranked must ask for HIGHEST."""
  q, g = np.ones((4, 8), np.float32), np.ones((16, 8), np.float32)
  lowered = [ranking.similarities.lower(q, g).as_text(),
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
  for key in ['mAP', 'precision_at_1', 'pml_map', 'map_at_r'] + [f'rank@{k}' for k in metrics.RANKS]:
    assert a[key] == pytest.approx(b[key], abs=1e-9)
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
  with pytest.raises(ValueError, match='must hold numbers'):
    metrics.image_retrieval(np.array([['a', 'b']]), [0], g[:, :2], [0] * 5)


def test_multimodal_ranks_break_ties_by_row_as_a_stable_sort():
  """Identical captions (rows 5 and 6) and a duplicated image (rows 20 and 30): each pair's rank is its
  place in a stable argsort of the negated scores, so of two tied items the lower row comes first."""
  rng = np.random.default_rng(2)
  img = rng.normal(size=(60, 16))
  txt = img + rng.normal(scale=1.5, size=(60, 16))
  txt[6] = txt[5]
  img[30] = img[20]
  got = metrics.multimodal_retrieval(img, txt, chunk=16)
  s = (_norm(img) @ _norm(txt).T).astype(np.float32)
  for name, sims in (('i2t', s), ('t2i', s.T)):
    ranks = np.array([1 + np.flatnonzero(np.argsort(-row, kind='stable') == i)[0] for i, row in enumerate(sims)])
    for k in (1, 5, 10):
      assert got[f'{name}_R@{k}'] == pytest.approx(np.mean(ranks <= k))
    assert got[f'{name}_mean_rank'] == pytest.approx(ranks.mean())
    assert got[f'{name}_median_rank'] == pytest.approx(np.median(ranks))
  assert s[6, 5] == s[6, 6] and s[5, 5] == s[5, 6] and (s[20] == s[30]).all()  # the ties are exact


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
