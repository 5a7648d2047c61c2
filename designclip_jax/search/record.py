"""A search record: what an examiner files with a search, so that anyone can tell what was searched and
repeat it. One record is one ranked list (a query with several cut-off dates makes one record per date)::

  {"record": "designclip_jax prior-art search", "version": 1,
   "time": "2026-12-03T19:22:01Z",                      # UTC, when the search ran
   "model": {"fingerprint": "<SHA-256 of weights, tokenizer, normalisation>", "step": 600},
   "index": {"index_json_sha256": "...", "rows": 10304, "patents": 1500, "sources": [...]},
   "query": {"patent": "D0907292"} | {"images": [{"name", "sha256"}], "text": "..."}, + "top", "target", "id",
   "filters": {"before": "2019-02-20", "before_from": "query patent's effective filing date" | "given",
               "locarno": ["28"], "class": [], "target": "drawings",
               "family_left_out": ["D0907292", ...]},   # a query by patent: its family (itself included)
   "patents_searched": 812,                             # patents with a row passing the filters
   "hits": [{"rank": 1, "patent_id", "score", "title", "class", "locarno", "grant_date",
             "effective_filing_date", "family_id", "family_in_index", "view", "kind", "drawing"}, ...]}

The index's identity is the SHA-256 of its index.json (which lists every shard, source and the model), with its
row and patent counts; a record made by the server names no path of its machine.
"""

from __future__ import annotations

import datetime

KIND = 'designclip_jax prior-art search'
VERSION = 1


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def make(*, model: dict, index: dict, query: dict, filters: dict, patents_searched: int, hits,
         with_source: bool = True) -> dict:
  """``model``: the index's model identity (index.json's); ``hits``: catalog.Hit, best first."""
  described = {'fingerprint': model['fingerprint'], 'step': model.get('step')}
  if with_source:
    described['source'] = model.get('source')
  return {'record': KIND, 'version': VERSION, 'time': utc_now(), 'model': described, 'index': index, 'query': query,
          'filters': filters, 'patents_searched': patents_searched,
          'hits': [{'rank': rank, **h.to_json(with_source)} for rank, h in enumerate(hits, 1)]}
