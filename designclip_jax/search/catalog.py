"""An index loaded for searching: its vectors on the devices with each row's filter codes (``topk.Rows``), and
the per-patent tables an examiner's search needs (a patent's rows, its family, its other views). Ranks patents
by their best row under each query's own filters, many queries per device call."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from designclip_jax.data import redbook
from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.search import index as index_lib
from designclip_jax.search import topk
from designclip_jax.search.filters import Filters
from designclip_jax.search.index import KINDS, SearchError

MAX_BATCH = 64  # queries per device call (padded to a power of two: few compiled shapes)
MAX_OTHER_VIEWS = 12  # other drawings shown per hit
EPOCH = np.datetime64('1970-01-01', 'D')


@dataclasses.dataclass(frozen=True)
class Hit:
  patent_id: str
  title: str
  class_: str  # '' where the source does not say (a folder of drawings, DeepPatent)
  score: float
  view: str
  kind: str  # what matched best: 'drawing' or 'caption'
  drawing: str  # inside its source: <split>:<record>:<image> (image -1 for a caption), or the file's path
  source: str  # the source's directory on this machine
  row: int
  locarno: str = ''  # '28-03'; '' where the source does not say
  grant_date: str = ''  # YYYY-MM-DD
  effective_filing_date: str = ''
  family_id: str = ''
  family: tuple = ()  # the other patents of its family in the index

  def to_json(self, with_source: bool = True) -> dict:
    """As JSON; ``with_source=False`` leaves out the directory (the server shows no paths of its machine)."""
    out = {'patent_id': self.patent_id, 'title': self.title, 'class': self.class_, 'locarno': self.locarno,
           'grant_date': self.grant_date, 'effective_filing_date': self.effective_filing_date,
           'family_id': self.family_id, 'family_in_index': list(self.family), 'score': self.score, 'view': self.view,
           'kind': self.kind, 'drawing': self.drawing}
    return {**out, 'source': self.source} if with_source else out


def _codes(values) -> tuple[np.ndarray, np.ndarray]:
  """(int32 codes, the distinct values): equal strings share a code (hashing, not a sort of Python strings)."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
  values = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(values, object),
                                                                                   pa.string())
  encoded = pc.dictionary_encode(values)
  return np.asarray(encoded.indices, np.int32), np.asarray(encoded.dictionary.to_pylist(), object)


def _slots(values, table: dict) -> np.ndarray:
  """int32 per value: ``table[value]``, 0 for a value the table lacks."""
  codes, distinct = _codes(values)
  return np.array([table.get(v, 0) for v in distinct] or [0], np.int32)[codes]


def _family_codes(family_ids, patent_ids) -> np.ndarray:
  """int32 per row, equal within a family; a patent without a family id is its own family."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.compute as pc  # pylint: disable=import-outside-toplevel
  family, patent = (pa.array(np.asarray(x, object), pa.string()) for x in (family_ids, patent_ids))
  key = pc.if_else(pc.equal(family, ''), pc.binary_join_element_wise('patent ', patent, ''),
                   pc.binary_join_element_wise('family ', family, ''))
  return _codes(key)[0]


def iso(day) -> str:
  return '' if np.isnat(day) else str(np.datetime64(day, 'D'))


class Catalog:

  def __init__(self, index_dir: str, *, devices=None):
    self.index_dir = index_dir
    self.index = index_lib.load(index_dir)
    meta = self.index.meta
    self.patent_code, self.patent_ids = _codes(meta['patent_id'])
    self.locarno_codes = np.array(sorted(set(_codes(meta['locarno'])[1].tolist()) - {''}), dtype=str)
    day = meta['effective_filing_date']
    self.rows = topk.Rows(_slots(meta['kind'], {k: i for i, k in enumerate(KINDS)}),
                          _slots(meta['class'], {c: i + 1 for i, c in enumerate(CLASS_CODES)}),  # 0: no class
                          _slots(meta['locarno'], {c: i + 1 for i, c in enumerate(self.locarno_codes.tolist())}),
                          np.where(np.isnat(day), topk.MISSING_DAY, (day - EPOCH).astype(np.int64)).astype(np.int32),
                          _family_codes(meta['family_id'], meta['patent_id']))
    self.device_index = topk.DeviceIndex(self.index.vectors, self.rows, devices=devices)
    self.rows_by_patent = np.argsort(self.patent_code, kind='stable')
    self.patent_starts = np.concatenate([[0], np.cumsum(np.bincount(self.patent_code,
                                                                     minlength=len(self.patent_ids)))])
    self.patent_family = self.rows.family[self.rows_by_patent[self.patent_starts[:-1]]]
    self._patent_number = {p: i for i, p in enumerate(self.patent_ids.tolist())}
    manifest = self.index.manifest
    self.sources = [manifest.source(i) for i in range(len(manifest.datasets))]

  def __len__(self) -> int:
    return len(self.index)

  # -- what the index is and has -----------------------------------------------------------------------

  def identity(self) -> dict:
    """The index as a search record names it: the SHA-256 of its index.json, its rows and patents, and for each
    source its kind, folder name and the patent fields it gives."""
    return {'index_json_sha256': self.index.manifest_sha256, 'rows': len(self), 'patents': len(self.patent_ids),
            'sources': [{'kind': d.get('kind', 'ingested'), 'name': os.path.basename(d['data_dir'].rstrip('/')),
                         'patent_fields': d.get('patent_fields', [])} for d in self.index.manifest.datasets]}

  def require(self, field: str, option: str) -> None:
    """A filter on ``field`` needs a source that gives it: else one line saying why none does."""
    if not any(self.index.has_field(field)):
      notes = sorted({d.get('patent_fields_note') or 'indexed before patent fields were stored: index it again'
                      for d in self.index.manifest.datasets})
      raise SearchError(f'{option} needs {field.replace("_", " ")}s, and no source of index {self.index_dir} '
                        f'gives them ({"; ".join(notes)})')

  # -- filters ------------------------------------------------------------------------------------------

  def wanted(self, filters: Filters, before: np.datetime64 | None = None, family: int = topk.NO_FAMILY) -> topk.Wanted:
    """One search's device filter: ``filters``' kinds, classes and Locarno codes, the cut-off ``before`` (rows
    effectively filed strictly before it), the family code left out."""
    locarno = None
    if filters.locarno:
      self.require('locarno', '--locarno')
      locarno = [i + 1 for i, code in enumerate(self.locarno_codes.tolist())
                 if any(code == f or code.startswith(f + '-') for f in filters.locarno)]
    if before is not None:
      self.require('effective_filing_date', '--before')
    classes = [CLASS_CODES.index(c) + 1 for c in filters.classes] if filters.classes else None
    return topk.wanted(tuple(KINDS.index(k) for k in filters.kinds), class_slots=len(CLASS_CODES) + 1,
                       classes=classes, locarno_slots=len(self.locarno_codes) + 1, locarno=locarno,
                       before=topk.NO_CUTOFF if before is None else int((before - EPOCH).astype(np.int64)),
                       family=family)

  def patents_passing(self, want: topk.Wanted) -> int:
    """How many patents have a row the filter lets through: the size of the search's gallery."""
    ok = topk.passes(np, self.rows, want)[0]
    return int(np.count_nonzero(np.bincount(self.patent_code[ok], minlength=len(self.patent_ids))))

  # -- patents ------------------------------------------------------------------------------------------

  def patent_number(self, patent_id: str) -> int:
    """A patent's number in the index, by its id as the index writes it or as a US design patent however written
    ('D907292', 'USD 907,292')."""
    number = self._patent_number.get(patent_id, self._patent_number.get(redbook.patent_number(patent_id)))
    if number is None:
      raise SearchError(f'patent {patent_id!r} is not in index {self.index_dir} ({len(self.patent_ids):,} patents)')
    return number

  def rows_of(self, number: int) -> np.ndarray:
    return self.rows_by_patent[self.patent_starts[number]:self.patent_starts[number + 1]]

  def drawing_rows(self, number: int, dataset: int | None = None) -> np.ndarray:
    """A patent's drawings (of its first source, or ``dataset``), without an ingested set's front-page drawing
    where it has others (the front page repeats one of its sheets)."""
    rows = self.rows_of(number)
    rows = rows[self.rows.kind[rows] == KINDS.index('drawing')]
    if not len(rows):
      return rows
    dataset = int(self.index.meta['dataset'][rows[0]]) if dataset is None else dataset
    rows = rows[self.index.meta['dataset'][rows] == dataset]
    if self.sources[dataset].kind == 'ingested' and len(rows) > 1:
      rows = rows[self.index.meta['image'][rows] != 0]
    return rows

  def family(self, number: int) -> tuple[str, ...]:
    """The other patents of a patent's family in the index, by id."""
    members = np.flatnonzero(self.patent_family == self.patent_family[number])
    return tuple(sorted(self.patent_ids[m] for m in members if m != number))

  def other_views(self, hit: Hit, limit: int = MAX_OTHER_VIEWS) -> list[int]:
    """Rows of the hit's patent's other drawings (of its source), at most ``limit``."""
    rows = self.drawing_rows(self.patent_code[hit.row], int(self.index.meta['dataset'][hit.row]))
    return [int(r) for r in rows if r != hit.row][:limit]

  def drawing(self, row: int) -> bytes | None:
    """A row's drawing as the index embedded it (PNG); for a caption row, its patent's first drawing. None where
    its source is no longer at the indexed path."""
    m = {c: self.index.meta[c][row] for c in ('dataset', 'split', 'record', 'image', 'path')}
    return self.sources[int(m['dataset'])].drawing(str(m['split']), int(m['record']), int(m['image']), str(m['path']),
                                                   self.index.manifest.sheet_size)

  # -- search -------------------------------------------------------------------------------------------

  def search(self, vectors: np.ndarray, wants: list[topk.Wanted], tops: list[int]) -> list[list[Hit]]:
    """For each unit query vector, its ``top`` best patents (each with its best row) under its filter."""
    found = [None] * len(vectors)
    pending, k = list(range(len(vectors))), 8 * max(tops, default=1)
    while pending:  # rows of one patent may crowd the top k: widen until `top` patents or every row is in
      k = min(1 << (k - 1).bit_length(), len(self))  # powers of two: few compiled shapes
      still = []
      for start in range(0, len(pending), MAX_BATCH):
        batch = pending[start:start + MAX_BATCH]
        size = 1 << (len(batch) - 1).bit_length()
        queries = np.concatenate([vectors[batch], np.repeat(vectors[batch[-1:]], size - len(batch), axis=0)])
        scores, rows = self.device_index.top_k(queries, k, topk.Wanted.stack([wants[q] for q in batch]).pad(size))
        for q, q_scores, q_rows in zip(batch, scores, rows):
          q_scores, q_rows = q_scores[q_rows >= 0], q_rows[q_rows >= 0]
          best = {}
          for row, score in zip(q_rows.tolist(), q_scores.tolist()):
            best.setdefault(self.patent_code[row], (row, score))
          if len(best) >= tops[q] or len(q_rows) < k or k == len(self):
            found[q] = [self.hit(row, score) for row, score in list(best.values())[:tops[q]]]
          else:
            still.append(q)
      pending, k = still, k * 4
    return found

  def hit(self, row: int, score: float) -> Hit:
    m = {c: self.index.meta[c][row] for c in index_lib.META_COLUMNS}
    drawing = str(m['path']) or f'{m["split"]}:{m["record"]}:{m["image"]}'
    return Hit(patent_id=str(m['patent_id']), title=str(m['title']), class_=str(m['class']), score=float(score),
               view=str(m['view']), kind=str(m['kind']), drawing=drawing,
               source=self.sources[int(m['dataset'])].location, row=int(row), locarno=str(m['locarno']),
               grant_date=iso(m['grant_date']), effective_filing_date=iso(m['effective_filing_date']),
               family_id=str(m['family_id']), family=self.family(self.patent_code[row]))
