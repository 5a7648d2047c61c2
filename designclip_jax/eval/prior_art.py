"""The prior-art benchmark graded by examiners' citations: which designs count as prior art for a query, which
of its citations are the relevant ones, and the scores of a ranking. Pure functions of arrays and dates.

The rule. A query's cut-off is its effective filing date: its earliest claimed priority date, else its filing
date. Its gallery is every patent of the collection effectively filed strictly before the cut-off (a US patent
filed earlier is prior art even when granted later: 35 U.S.C. 102(a)(2)), its own family (itself included)
left out. Its relevant designs are the documents it cites that lie in that gallery; a query is a patent with at
least one. Each distinct cited document of a candidate query is counted once and, when the rule leaves it out,
under the first reason that applies: ``outside_collection`` (not a patent of the collection: an older or
foreign design, a utility patent, a publication), ``in_family`` (the query itself or a patent of its family),
``after_cutoff`` (in the collection, not in the family, effectively filed on or after the cut-off).

The ranking (``prior_art_ranking``) places every gallery patent of a query; ties fall by collection row order
(a stable sort of the scores over the collection's rows, as eval.metrics ranks DeepPatent's gallery). Every
score below is a function of the 1-based ranks r_1 < ... < r_n of a query's n relevant designs in its gallery:

- ``recall@k``: the share of its relevant designs ranked in the first k, averaged over queries;
- ``MAP``: average precision, (1/n) sum_i i / r_i, averaged over queries (the whole gallery is ranked, so
  every relevant design has a rank);
- ``MRR``: 1 / r_1 averaged over queries;
- ``PRES@N`` (Magdy & Jones, "PRES: a score metric for evaluating recall-oriented information retrieval
  applications", SIGIR 2010): 1 - (sum_i r_i / n - (n + 1) / 2) / N, where a relevant design ranked past N
  counts at rank N + i (i its place among the n, ranked ones first): 1 when all lead the list, 0 when all
  come just after N, and between n R^2 / N and R (R = recall@N) otherwise. N_max = 100 and 1000 here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

RECALL_KS = (10, 50, 100, 1000)
PRES_N = (100, 1000)
REASONS = ('outside_collection', 'in_family', 'after_cutoff')
METRIC_KEYS = tuple(f'recall@{k}' for k in RECALL_KS) + ('MAP', 'MRR') + tuple(f'PRES@{n}' for n in PRES_N)
TIE_RULE = ('exact ties fall by collection row order (a stable sort of the scores over the rows of the '
            'collection), as eval.metrics ranks DeepPatent galleries')


def effective_filing_dates(filing, earliest_priority) -> np.ndarray:
  """(P,) datetime64[D]: the earliest claimed priority date where one is claimed (NaT: none), else the filing
  date; a priority date after the filing date (a data error) leaves the filing date."""
  filing = np.asarray(filing, 'datetime64[D]')
  priority = np.asarray(earliest_priority, 'datetime64[D]')
  if filing.shape != priority.shape:
    raise ValueError(f'filing dates {filing.shape} and priority dates {priority.shape} differ in shape')
  if np.isnat(filing).any():
    raise ValueError(f'{int(np.isnat(filing).sum())} patents have no filing date (first row '
                     f'{int(np.flatnonzero(np.isnat(filing))[0])}): every patent needs one for its cut-off')
  return np.where(np.isnat(priority) | (priority > filing), filing, priority)


def codes(labels) -> np.ndarray:
  """Integer codes, equal where labels are equal (family ids, classes)."""
  return np.unique(np.asarray(labels), return_inverse=True)[1].astype(np.int64).reshape(-1)


@dataclasses.dataclass(frozen=True)
class Judgments:
  """Queries and their relevant designs (rows of the collection), in CSR form."""
  queries: np.ndarray        # (Q,) collection rows of the queries, ascending
  offsets: np.ndarray        # (Q + 1,): query q's relevant rows are relevant[offsets[q]:offsets[q + 1]]
  relevant: np.ndarray       # rows of the relevant designs, ascending within a query
  gallery_sizes: np.ndarray  # (Q,) patents in each query's gallery
  counts: dict               # distinct citations of the candidate queries: kept and left out by reason
  coverage: dict             # resolvable citations / all; queries kept / candidates

  def relevant_of(self, q: int) -> np.ndarray:
    return self.relevant[self.offsets[q]:self.offsets[q + 1]]


def gallery_sizes(effective, family, rows) -> np.ndarray:
  """For each of ``rows``: how many patents were effectively filed strictly before it, its family left out."""
  days = np.asarray(effective, 'datetime64[D]').astype(np.int64)
  family = codes(family)
  before = np.searchsorted(np.sort(days), days[rows], side='left')
  # its family's patents filed before it: (family, day) keys sorted, counted between (family, -inf) and (family, day)
  span = int(days.max() - days.min()) + 2
  keys = np.sort(family * span + (days - days.min()))
  first = np.searchsorted(keys, family[rows] * span, side='left')
  own = np.searchsorted(keys, family[rows] * span + (days[rows] - days.min()), side='left') - first
  return before - own


def judgments(ids, effective, family, cited, candidates=None) -> Judgments:
  """The queries and relevant designs of a collection. ``ids`` (P,) patent ids in one normal form, ``effective``
  (P,) effective filing dates, ``family`` (P,) family labels, ``cited`` P sequences of cited document ids in the
  same normal form (only candidates' are read), ``candidates`` (P,) bool: which patents may be queries (e.g.
  those of the test split; default all)."""
  ids = np.asarray(ids)
  num = ids.shape[0]
  effective = np.asarray(effective, 'datetime64[D]')
  family = codes(family)
  if effective.shape != (num,) or family.shape != (num,) or len(cited) != num:
    raise ValueError(f'ids, effective dates, families and citations must have one entry per patent ({num}); got '
                     f'{effective.shape[0]}, {family.shape[0]} and {len(cited)}')
  row_of = {pid: row for row, pid in enumerate(ids.tolist())}
  if len(row_of) != num:
    raise ValueError(f'patent ids repeat ({num - len(row_of)} repeats): each patent must be one row')
  candidates = np.ones(num, bool) if candidates is None else np.asarray(candidates, bool)
  counts = dict.fromkeys(('citations', 'kept') + REASONS, 0)
  queries, offsets, relevant = [], [0], []
  for q in np.flatnonzero(candidates):
    kept = set()
    for doc in dict.fromkeys(cited[q]):  # each distinct document once, first mention order
      row = row_of.get(doc)
      reason = ('outside_collection' if row is None else 'in_family' if family[row] == family[q] else
                'after_cutoff' if effective[row] >= effective[q] else None)
      counts['citations'] += 1
      if reason:
        counts[reason] += 1
      else:
        kept.add(row)
    counts['kept'] += len(kept)
    if kept:
      queries.append(q)
      relevant.extend(sorted(kept))
      offsets.append(len(relevant))
  queries = np.array(queries, np.int64)
  resolvable = counts['citations'] - counts['outside_collection']
  coverage = {'citations_in_collection': resolvable, 'citations': counts['citations'],
              'citations_resolvable_share': resolvable / counts['citations'] if counts['citations'] else float('nan'),
              'queries': len(queries), 'candidates': int(candidates.sum()),
              'queries_kept_share': len(queries) / max(1, int(candidates.sum()))}
  return Judgments(queries, np.array(offsets, np.int64), np.array(relevant, np.int64),
                   gallery_sizes(effective, family, queries), counts, coverage)


def query_scores(ranks: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
  """Per-query scores (arrays of Q) from the 1-based ranks of each query's relevant designs (CSR, any order
  within a query)."""
  num = len(offsets) - 1
  sizes = np.diff(offsets)
  if (sizes < 1).any():
    raise ValueError('every query needs at least one relevant design')
  query = np.repeat(np.arange(num), sizes)
  order = np.lexsort((ranks, query))  # by query, then rank
  ranked = ranks[order].astype(np.float64)
  if ((np.diff(ranked) == 0) & (np.diff(query) == 0)).any():
    raise ValueError('two relevant designs of one query share a rank')
  place = np.arange(ranks.size) - np.repeat(offsets[:-1], sizes) + 1.0  # i: place among the query's relevant
  per_query = lambda values: np.add.reduceat(values, offsets[:-1]) if num else np.zeros(0)
  out = {f'recall@{k}': per_query((ranked <= k).astype(np.float64)) / sizes for k in RECALL_KS}
  out['MAP'] = per_query(place / ranked) / sizes
  out['MRR'] = 1.0 / ranked[offsets[:-1]] if num else np.zeros(0)
  for n_max in PRES_N:
    counted = np.where(ranked <= n_max, ranked, n_max + place)
    out[f'PRES@{n_max}'] = 1.0 - (per_query(counted) / sizes - (sizes + 1) / 2.0) / n_max
  return out


def summary(per_query: dict[str, np.ndarray], query_class=None) -> dict:
  """Means over queries, ``num_queries``, and (with ``query_class`` (Q,) labels) the same by class, as
  ``by_class[label]``."""
  out = {k: float(np.mean(v)) if len(v) else float('nan') for k, v in per_query.items()}
  out['num_queries'] = len(next(iter(per_query.values())))
  if query_class is not None:
    query_class = np.asarray(query_class)
    out['by_class'] = {str(c): summary({k: v[query_class == c] for k, v in per_query.items()})
                       for c in np.unique(query_class)}
  return out
