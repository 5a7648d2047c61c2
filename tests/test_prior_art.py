"""The prior-art benchmark against a brute-force NumPy float64 reference written here: every query's gallery built
patent by patent from the rule (effective filing dates, families), the whole gallery sorted by score with ties by
collection row, the scores computed from those ranks by their textbook formulas (PRES as Magdy & Jones 2010 state
it). The collection holds equal dates, priorities before filing, families, exact ties, citations after the
cut-off and outside the collection, and a query with 45 citations."""

import datetime

import numpy as np
import pytest

from designclip_jax.eval import prior_art, prior_art_ranking
from designclip_jax.eval.prior_art_baselines import BM25, LocarnoByDate

D = 32


def _exact_vectors(rng, n):
  """Unit vectors of 16 entries +-1/4 (the rest 0): every cosine is a multiple of 1/16, exact in float32 and
  float64 alike, so ranks can be compared exactly and exact ties abound."""
  x = np.zeros((n, D), np.float32)
  for row in x:
    row[rng.choice(D, 16, replace=False)] = rng.choice([-0.25, 0.25], 16)
  return x


def _collection(seed=0, n=150):
  """ids, filing, priority, family, Locarno, citations, titles: a collection with every case the rule has."""
  rng = np.random.default_rng(seed)
  ids = np.array([f'D{700000 + k:07d}' for k in range(n)])
  start = np.datetime64('2018-01-01')
  filing = start + rng.integers(0, 900, n).astype('timedelta64[D]')
  filing[10:16] = filing[9]  # equal filing dates
  priority = np.full(n, np.datetime64('NaT'), 'datetime64[D]')
  claims = rng.random(n) < 0.25
  priority[claims] = filing[claims] - rng.integers(20, 180, claims.sum()).astype('timedelta64[D]')
  priority[20] = filing[20] + np.timedelta64(5, 'D')  # a priority after filing (a data error): filing counts
  filing[7], priority[7] = start + 1000, np.datetime64('NaT')  # the latest patent: it cites 45 earlier ones
  family = ids.copy()
  for a, b in rng.integers(0, n, (30, 2)):
    family[b] = family[a]
  locarno = rng.choice(['28-03', '28-02', '06-01', '14-03', ''], n)
  effective = np.where(np.isnat(priority) | (priority > filing), filing, priority)
  cited = []
  for k in range(n):
    docs = list(rng.choice(ids, rng.integers(0, 12), replace=False))
    docs += ['D0345678', 'US9876543', 'JPD1234567'][:rng.integers(0, 3)]  # outside the collection
    if k == 7:
      docs = list(ids[np.argsort(effective)][:45])
    docs += docs[:1]  # a repeated citation counts once
    cited.append(docs)
  titles = [f'{rng.choice(["razor", "lamp", "chair", "bottle"])} {rng.choice(["handle", "shade", "cap", "base"])}'
            for _ in range(n)]
  return ids, filing, priority, family, locarno, cited, titles


def _reference(scores, ids, effective, family, cited, candidates):
  """Per query (collection row): its relevant rows and their ranks, and the left-out counts, brute force."""
  row_of = {pid: r for r, pid in enumerate(ids)}
  out, counts = {}, dict(citations=0, kept=0, outside_collection=0, in_family=0, after_cutoff=0)
  for q in np.flatnonzero(candidates):
    gallery = [j for j in range(len(ids)) if effective[j] < effective[q] and family[j] != family[q]]
    relevant = []
    for doc in dict.fromkeys(cited[q]):
      counts['citations'] += 1
      if doc not in row_of:
        counts['outside_collection'] += 1
      elif family[row_of[doc]] == family[q]:
        counts['in_family'] += 1
      elif row_of[doc] not in gallery:
        counts['after_cutoff'] += 1
      else:
        relevant.append(row_of[doc])
    counts['kept'] += len(relevant)
    if relevant:
      ranked = sorted(gallery, key=lambda j: (-scores[q, j], j))  # ties by collection row
      out[q] = (sorted(relevant), [ranked.index(j) + 1 for j in sorted(relevant)], len(gallery))
  return out, counts


def _reference_metrics(ranks):
  ranks = sorted(ranks)
  n = len(ranks)
  m = {f'recall@{k}': sum(r <= k for r in ranks) / n for k in prior_art.RECALL_KS}
  m['MAP'] = sum((i + 1) / r for i, r in enumerate(ranks)) / n
  m['MRR'] = 1 / ranks[0]
  for big_n in prior_art.PRES_N:  # Magdy & Jones 2010: PRES = 1 - (sum r_i / n - (n + 1) / 2) / N_max
    counted = [r if r <= big_n else big_n + i + 1 for i, r in enumerate(ranks)]
    m[f'PRES@{big_n}'] = 1 - (sum(counted) / n - (n + 1) / 2) / big_n
  return m


def _check(scorer, scores, *, seed=0, chunk=16, block_scores=512, candidates=None):
  ids, filing, priority, family, _, cited, _ = _collection(seed)
  effective = prior_art.effective_filing_dates(filing, priority)
  candidates = np.ones(len(ids), bool) if candidates is None else candidates
  judged = prior_art.judgments(ids, effective, family, cited, candidates)
  ranks = prior_art_ranking.citation_ranks(scorer, effective, family, judged, chunk=chunk, block_scores=block_scores)
  expected, counts = _reference(scores, ids, effective, family, cited, candidates)
  assert judged.counts == counts
  assert judged.queries.tolist() == sorted(expected)
  for q, row in enumerate(judged.queries):
    relevant, want, size = expected[row]
    assert judged.relevant_of(q).tolist() == relevant and judged.gallery_sizes[q] == size
    assert ranks[judged.offsets[q]:judged.offsets[q + 1]].tolist() == want, f'query row {row}'
  per_query = prior_art.query_scores(ranks, judged.offsets)
  for q, row in enumerate(judged.queries):
    for key, value in _reference_metrics(expected[row][1]).items():
      assert per_query[key][q] == pytest.approx(value, abs=1e-12), (key, row)
  return judged, ranks


def test_effective_date_is_the_earliest_priority_else_filing():
  filing = np.array(['2020-05-01', '2020-05-01', '2020-05-01'], 'datetime64[D]')
  priority = np.array(['NaT', '2019-12-01', '2020-06-01'], 'datetime64[D]')
  assert prior_art.effective_filing_dates(filing, priority).astype(str).tolist() == [
      '2020-05-01', '2019-12-01', '2020-05-01']
  with pytest.raises(ValueError, match='1 patents have no filing date'):
    prior_art.effective_filing_dates(np.array(['NaT'], 'datetime64[D]'), np.array(['NaT'], 'datetime64[D]'))


def test_cosine_ranks_and_scores_match_the_brute_force_reference_with_exact_ties():
  vectors = _exact_vectors(np.random.default_rng(1), 150)
  vectors[40:44] = vectors[3]  # identical designs: exact ties everywhere they are compared
  scores = vectors.astype(np.float64) @ vectors.astype(np.float64).T
  judged, _ = _check(prior_art_ranking.Cosine(vectors), scores)
  c = judged.counts
  assert c['outside_collection'] and c['in_family'] and c['after_cutoff'] and c['kept']  # every reason occurs
  assert np.diff(judged.offsets).max() > 32  # a query with many relevant designs
  assert len(np.unique(judged.gallery_sizes)) > 10


def test_ranks_do_not_depend_on_chunk_or_block_size():
  vectors = _exact_vectors(np.random.default_rng(2), 150)
  scores = vectors.astype(np.float64) @ vectors.astype(np.float64).T
  _, a = _check(prior_art_ranking.Cosine(vectors), scores, chunk=8, block_scores=64)
  _, b = _check(prior_art_ranking.Cosine(vectors), scores, chunk=256, block_scores=1 << 20)
  assert a.tolist() == b.tolist()


def test_random_float_vectors_rank_as_float64_does():
  vectors = np.random.default_rng(3).normal(size=(150, D)).astype(np.float32)
  unit = vectors / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
  _check(prior_art_ranking.Cosine(vectors), unit @ unit.T, seed=1)


def test_best_view_pair_is_the_largest_cosine_over_drawing_pairs():
  rng = np.random.default_rng(4)
  counts = rng.integers(1, 6, 150)
  offsets = np.concatenate([[0], np.cumsum(counts)])
  views = _exact_vectors(rng, int(offsets[-1]))
  views[offsets[50]] = views[offsets[60] + counts[60] - 1]  # two patents sharing one drawing: a tie at 1
  v = views.astype(np.float64)
  scores = np.array([[np.max(v[offsets[a]:offsets[a + 1]] @ v[offsets[b]:offsets[b + 1]].T) for b in range(150)]
                     for a in range(150)])
  _check(prior_art_ranking.BestViewPair(views, offsets), scores, chunk=8)


def test_only_candidates_are_queries_and_left_out_counts_are_theirs():
  vectors = _exact_vectors(np.random.default_rng(5), 150)
  candidates = np.zeros(150, bool)
  candidates[100:] = True
  judged, _ = _check(prior_art_ranking.Cosine(vectors), vectors.astype(np.float64) @ vectors.T.astype(np.float64),
                     candidates=candidates)
  assert judged.queries.min() >= 100 and judged.coverage['candidates'] == 50
  assert judged.coverage['queries_kept_share'] == len(judged.queries) / 50


def test_locarno_by_date_ranks_subclass_then_class_then_the_rest_newest_first():
  _, filing, priority, _, locarno, _, _ = _collection(6)
  effective = prior_art.effective_filing_dates(filing, priority)
  days = effective.astype(np.int64)
  cls = np.char.partition(locarno.astype(str), '-')[:, 0]
  tier = lambda q, j: (locarno[j] != '' and locarno[j] == locarno[q]) + (locarno[j] != '' and cls[j] == cls[q])
  scores = np.array([[tier(q, j) * 1e6 + days[j] for j in range(150)] for q in range(150)], np.float64)
  _check(LocarnoByDate(locarno, effective), scores, seed=6)


def _bm25_reference(texts, k1=1.5, b=0.75):
  """Lucene's BM25 in float64: idf = ln(1 + (N - df + 0.5) / (df + 0.5)); tf / (tf + k1 (1 - b + b dl / avgdl))."""
  import re  # pylint: disable=import-outside-toplevel
  from bm25s.stopwords import STOPWORDS_EN  # pylint: disable=import-outside-toplevel
  docs = [[w for w in re.findall(r'(?u)\b\w\w+\b', t.lower()) if w not in STOPWORDS_EN] for t in texts]
  n, avgdl = len(docs), np.mean([len(d) for d in docs])
  df = {}
  for d in docs:
    for w in set(d):
      df[w] = df.get(w, 0) + 1
  idf = {w: np.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
  scores = np.zeros((n, n))
  for q, query in enumerate(docs):
    for j, d in enumerate(docs):
      for w in query:  # a word the query repeats counts each time (bm25s, like Lucene's boolean query, sums them)
        tf = d.count(w)
        scores[q, j] += idf[w] * tf / (tf + k1 * (1 - b + b * len(d) / avgdl)) if tf else 0
  return scores


def test_bm25_scores_are_lucene_bm25_over_title_and_claim():
  pytest.importorskip('bm25s')
  _, _, _, _, _, _, titles = _collection(0)
  texts = [f'{t}. The ornamental design for a {t}, as shown.' for t in titles]
  texts[5] = ''  # a patent without words scores 0
  reference = _bm25_reference(texts)
  scorer = BM25(texts)
  scorer.prepare(np.arange(150), 16)
  got = np.asarray(scorer.scores(np.arange(8), 160))
  np.testing.assert_allclose(got[:, :150], reference[:8], rtol=2e-6, atol=1e-6)
  assert (got[5] == 0).all()
  _check(scorer, _bm25_reference(texts))  # equal words tie exactly in both


def test_summary_by_class_and_bad_input():
  per_query = prior_art.query_scores(np.array([1, 3, 2, 50, 1200]), np.array([0, 2, 3, 5]))
  assert per_query['MRR'].tolist() == [1.0, 0.5, 1 / 50]
  assert per_query['recall@50'].tolist() == [1.0, 1.0, 0.5]
  # PRES@100 of ranks (50, 1200): 1200 counts as 100 + 2 -> 1 - ((50 + 102) / 2 - 1.5) / 100
  assert per_query['PRES@100'][2] == pytest.approx(1 - ((50 + 102) / 2 - 1.5) / 100)
  out = prior_art.summary(per_query, np.array(['28', '06', '28']))
  assert out['num_queries'] == 3 and out['by_class']['28']['MRR'] == pytest.approx((1 + 1 / 50) / 2)
  with pytest.raises(ValueError, match='share a rank'):
    prior_art.query_scores(np.array([2, 2]), np.array([0, 2]))
  with pytest.raises(ValueError, match='ids repeat'):
    prior_art.judgments(['D1', 'D1'], np.array(['2020-01-01'] * 2, 'datetime64[D]'), ['a', 'b'], [[], []])
