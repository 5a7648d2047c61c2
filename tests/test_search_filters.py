"""An examiner's filters (effective filing date, Locarno class or subclass, USPC class, lists, a family left out)
on an index written here with metadata chosen to crowd their edges, against a float64 NumPy brute force written
from the index's metadata strings (tests.search_helpers.reference_ranking); the one-line refusals of filters no
source can answer and of bad values."""

import datetime

import numpy as np
import pytest

from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.search import filters
from designclip_jax.search import index as index_lib
from designclip_jax.search.catalog import Catalog
from designclip_jax.search.index import SearchError
from tests.search_helpers import family_key, reference_ranking


def _write_index(out, rng, patents=300, dim=16):
  """An index of random unit vectors whose metadata crowds the filters' edges: 12 distinct effective dates (ties
  at every cut-off), 40 families of several patents and patents of none, Locarno classes with two subclasses
  each and rows without a code, and a second source (a folder) that gives no patent fields."""
  days = np.datetime64('2019-01-01') + np.sort(rng.choice(900, 12, replace=False))
  locarno = ['06-01', '06-03', '14-01', '14-03', '28-03', '28-05', '']
  meta = {c: [] for c in index_lib.META_COLUMNS}
  for p in range(patents):
    views, dataset = int(rng.integers(1, 5)), int(p >= patents - 30)
    fields = {'grant_date': None, 'effective_filing_date': None, 'locarno': '', 'family_id': ''}
    if not dataset:
      effective = rng.choice(days) if rng.random() > 0.05 else None
      fields = {'effective_filing_date': None if effective is None else effective.astype(object),
                'grant_date': None if effective is None else (effective + 400).astype(object),
                'locarno': locarno[rng.integers(len(locarno))],
                'family_id': f'US29{rng.integers(40):06d}' if rng.random() < 0.6 else ''}
    klass = CLASS_CODES[rng.integers(6)] if not dataset else ''
    for image in range(views + 1):
      kind = 'drawing' if image < views else 'caption'
      row = dict(kind=kind, patent_id=f'P{p:04d}', title='', view='', dataset=dataset, split='all', record=p,
                 image=image if kind == 'drawing' else -1, path='', **{'class': klass}, **fields)
      for c in index_lib.META_COLUMNS:
        meta[c].append(row[c])
  rows = len(meta['kind'])
  vectors = rng.normal(size=(rows, dim))
  index_lib.write_shard(str(out), 'shard-00000', (vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
                        .astype(np.float16), meta)
  manifest = index_lib.Manifest(dtype='float16', model={'source': 'none', 'fingerprint': '0' * 64},
                                records_per_shard=patents)
  manifest.datasets = [{'kind': 'ingested', 'data_dir': str(out / 'set'), 'splits': ['all'], 'sheet_size': 32,
                        'patent_fields': list(index_lib.patents.FIELDS), 'patent_fields_note': ''},
                       {'kind': 'folder', 'data_dir': str(out / 'drawings'), 'splits': ['all'], 'sheet_size': 32,
                        'patent_fields': [], 'patent_fields_note': 'drawing files carry none'}]
  manifest.shards = [{'name': 'shard-00000', 'dataset': 0, 'split': 'all', 'start': 0, 'rows': rows, 'skipped': 0}]
  manifest.save(str(out))
  return days


def test_filters_equal_a_brute_force_numpy_ranking(tmp_path):
  """Many queries in one batched device call (8 devices), each with its own filters, against the reference: a
  cut-off equal to some patents' date leaves them out; a Locarno class takes its subclasses, a subclass only
  itself; lists take any of their values; a family is left out whole; rows of a source without dates or Locarno
  codes never pass those filters, and pass the others."""
  rng = np.random.default_rng(0)
  days = _write_index(tmp_path, rng)
  catalog = Catalog(str(tmp_path))
  meta, vectors = catalog.index.meta, catalog.index.vectors
  family_patent = next(p for p, f in zip(meta['patent_id'], meta['family_id'])
                       if f and (meta['family_id'] == f).sum() > 12)
  cases = [dict(before=str(days[5])), dict(locarno=('14',)), dict(locarno=('14-01',)),
           dict(locarno=('06', '28-03'), classes=('D1', 'D3')),
           dict(classes=('D2', 'D5'), kinds=('drawing', 'caption')),
           dict(family=family_patent), dict(family=family_patent, before=str(days[9]), locarno=('28',)),
           dict(kinds=('caption',)), dict()]
  queries = rng.normal(size=(len(cases), vectors.shape[1]))
  queries /= np.linalg.norm(queries, axis=1, keepdims=True)
  wants = []
  for case in cases:
    target = {('drawing',): 'drawings', ('caption',): 'captions'}.get(case.get('kinds', ('drawing',)), 'all')
    chosen = filters.parse(locarno=list(case.get('locarno', ())), classes=list(case.get('classes', ())), target=target)
    family = catalog.patent_family[catalog.patent_number(case['family'])] if 'family' in case else -1
    wants.append(catalog.wanted(chosen, np.datetime64(case['before']) if 'before' in case else None, family))
  found = catalog.search(queries.astype(np.float32), wants, [25] * len(cases))
  for case, query, want, hits in zip(cases, queries, wants, found):
    ids, scores, passing = reference_ranking(meta, vectors, query, 25, kinds=case.get('kinds', ('drawing',)),
                                      before=case.get('before'), locarno=case.get('locarno', ()),
                                      classes=case.get('classes', ()),
                                      family=family_key(meta, case['family']) if 'family' in case else None)
    assert [h.patent_id for h in hits] == ids, case
    np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-5, atol=1e-6)
    assert catalog.patents_passing(want) == passing, case
  at_cutoff = set(meta['patent_id'][meta['effective_filing_date'] == days[5]])
  assert at_cutoff and not at_cutoff & {h.patent_id for h in found[0]}  # equal to the cut-off: not before it
  assert catalog.patents_passing(wants[1]) > catalog.patents_passing(wants[2]) > 0
  assert {h.locarno for h in found[1]} == {'14-01', '14-03'} and {h.locarno for h in found[2]} == {'14-01'}
  assert any(h.patent_id >= 'P0270' for h in found[-1])  # the folder source's patents: no filter, they pass


def test_filters_a_source_cannot_answer_refuse_in_one_line(tmp_path):
  """An index none of whose sources gives Locarno codes or dates (say a set ingested from CSV alone) refuses
  --locarno and --before with one line naming the index and why; bad filter values are one line each."""
  _write_index(tmp_path, np.random.default_rng(1))
  manifest = index_lib.Manifest.load(str(tmp_path))
  manifest.datasets[0].update(patent_fields=['locarno'],
                              patent_fields_note='no patents.jsonl (ingested from CSV alone)')
  manifest.save(str(tmp_path))
  catalog = Catalog(str(tmp_path))
  catalog.wanted(filters.parse(locarno='28'))  # Locarno codes it has
  with pytest.raises(SearchError) as e:
    catalog.wanted(filters.Filters(), np.datetime64('2020-01-01'))
  assert str(e.value) == (f'--before needs effective filing dates, and no source of index {tmp_path} gives them '
                          '(drawing files carry none; no patents.jsonl (ingested from CSV alone))')
  today = datetime.datetime.now(datetime.timezone.utc).date()
  for kwargs, message in [(dict(before='2020-13-01'), "--before '2020-13-01' is not a date (YYYY-MM-DD)"),
                          (dict(before='20200101'), "--before '20200101' is not a date (YYYY-MM-DD)"),
                          (dict(before=str(today + datetime.timedelta(days=1))),
                           f'--before {today + datetime.timedelta(days=1)} is in the future (today is {today} UTC)'),
                          (dict(locarno='40'), "--locarno '40' is not a Locarno class (01-32 or 99)"),
                          (dict(locarno='28-3x'), "--locarno '28-3x' is not a Locarno class (e.g. 28) or class-"
                                                  'subclass (e.g. 28-03)'),
                          (dict(classes=['D7', 'D31']), "--class 'D31' is not a USPC design class")]:
    with pytest.raises(SearchError) as e:
      filters.parse(**kwargs)
    assert str(e.value).startswith(message), str(e.value)
  assert filters.parse(before=[str(today), '2020-01-01,2019-05-05'], locarno=['2803', '6', '28-03'],
                       classes='d07, D 28') == filters.Filters(before=(str(today), '2020-01-01', '2019-05-05'),
                                                               locarno=('28-03', '06'), classes=('D7', 'D28'))
