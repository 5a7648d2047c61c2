"""Run searches: a query by drawings and/or words, or by a patent of the index; results grouped per patent (its
best row and score), each search written as a record (``search.record``).

A query by patent is its drawings in the index: the mean of their unit vectors as the index stores them (an
ingested set's front-page drawing left out where the patent has others: it repeats one of its sheets), its family
(itself included) left out, and, unless the query gives cut-offs, the cut-off at its effective filing date. It
needs no model. Query drawings are preprocessed as ingestion does, their unit vectors averaged and then
averaged with the words' unit vector when both are given. Many queries are searched together: their drawings
and words embedded in one call each, their top-k in batches of up to ``catalog.MAX_BATCH`` per device call.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from etils import epath
from PIL import UnidentifiedImageError

from designclip_jax.data import images as image_ops
from designclip_jax.eval.embed import embed_images, embed_texts, place_on_devices
from designclip_jax.eval.metrics import l2_normalize
from designclip_jax.search import filters as filters_lib
from designclip_jax.search import index as index_lib
from designclip_jax.search import record as record_lib
from designclip_jax.search import topk
from designclip_jax.search.catalog import Catalog, Hit
from designclip_jax.search.index import SearchError
from designclip_jax.search.queries import Image, Query

BATCH_QUERIES = 64  # queries embedded and searched together


@dataclasses.dataclass
class Result:
  """One search: a query at one cut-off."""
  query: Query
  before: str | None
  sheets: list  # the query drawings as the model saw them (PNG), or the query patent's drawings
  hits: list[Hit]
  record: dict


@dataclasses.dataclass
class _Resolved:
  query: Query
  image_bytes: list
  sheets: list
  vector: np.ndarray | None = None  # a query by patent: known before any embedding
  family: int = topk.NO_FAMILY
  family_ids: tuple = ()
  cutoffs: tuple = (None,)
  before_from: str = ''


class Searcher:
  """An index on the devices (``Catalog``) plus the model that built it (checked by fingerprint), loaded when a
  query first needs it (a query by patent does not), or at once with ``load_model=True``."""

  def __init__(self, index_dir: str, checkpoint: str | None = None, *, devices=None, batch_size: int = 32,
               load_model: bool = True):
    self.index_dir = index_dir
    self.catalog = Catalog(index_dir, devices=devices)
    self.index = self.catalog.index
    self.checkpoint = checkpoint
    self.batch_size = batch_size
    self._model = None
    if load_model:
      self._load_model()

  def _load_model(self):
    if self._model is None:
      from designclip_jax.weights.loader import load_model  # pylint: disable=import-outside-toplevel
      source = self.checkpoint or self.index.manifest.model['source']
      if self.checkpoint is None and not epath.Path(source).exists():
        raise SearchError(f'the model that built index {self.index_dir} ({source}) is no longer there; '
                          'pass --checkpoint')
      clip, tokenizer, normalization = load_model(source)
      index_lib.check_same_model(self.index.manifest.model,
                                 index_lib.model_identity(source, clip, tokenizer, normalization), self.index_dir)
      self._model = place_on_devices(clip), tokenizer, normalization  # once, not on every query
    return self._model

  clip = property(lambda self: self._load_model()[0])
  tokenizer = property(lambda self: self._load_model()[1])
  normalization = property(lambda self: self._load_model()[2])

  # -- query encoding -------------------------------------------------------------------------------

  def preprocess(self, data: bytes, name: str) -> bytes:
    """A query drawing (TIFF/PNG/JPEG bytes, any size) -> the PNG sheet the index stores for its
    drawings: the same crop, label removal, padding and resize, at the index's sheet size."""
    try:
      gray = image_ops.load_gray(data)
    except image_ops.ImageTooLargeError as e:
      raise SearchError(f'query image {name}: {e}') from None
    except (UnidentifiedImageError, OSError, ValueError) as e:  # PIL's 'cannot identify' names no file: drop it
      detail = '' if isinstance(e, UnidentifiedImageError) else f' ({e})'
      raise SearchError(f'query image {name}: cannot be decoded as a TIFF, PNG or JPEG drawing{detail}') from None
    return image_ops.encode_png(image_ops.preprocess_sheet(gray, self.index.manifest.sheet_size))

  def encode(self, sheets: list[bytes] = (), text: str | None = None) -> np.ndarray:
    """One unit query vector: the mean of the normalised view embeddings (several drawings of one
    design), averaged with the normalised text embedding when both are given."""
    views = self._embed_sheets(list(sheets))
    words = self._embed_texts([text.strip()]) if text and text.strip() else np.zeros((0, 1))
    if not len(views) and not len(words):
      raise SearchError('a query needs at least one drawing or some words')
    return _combine(views, words[0] if len(words) else None)

  def _embed_sheets(self, sheets: list[bytes]) -> np.ndarray:
    if not sheets:
      return np.zeros((0, 1), np.float32)
    return embed_images(self.clip, sheets, batch_size=self.batch_size, progress=False,
                        normalization=self.normalization)

  def _embed_texts(self, texts: list[str]) -> np.ndarray:
    if not texts:
      return np.zeros((0, 1), np.float32)
    return embed_texts(self.clip, self.tokenizer, texts, batch_size=self.batch_size, progress=False)

  # -- search ---------------------------------------------------------------------------------------

  def search_vector(self, vector: np.ndarray, *, top: int = 20, filters: filters_lib.Filters = filters_lib.Filters(),
                    before: str | None = None) -> list[Hit]:
    """The ``top`` best patents for a unit query vector under ``filters`` (and one cut-off)."""
    want = self.catalog.wanted(filters, np.datetime64(before, 'D') if before else None)
    return self.catalog.search(np.asarray(vector, np.float32)[None], [want], [top])[0]

  def search(self, images=(), text: str | None = None, *, top: int = 20,
             filters: filters_lib.Filters = filters_lib.Filters()) -> tuple[list[bytes], list[Hit]]:
    """``images``: (name, bytes) pairs. The preprocessed query sheets and the hits of the first cut-off."""
    query = Query(filters, top, images=tuple(Image(name, data=data) for name, data in images), text=text).check()
    result = self.run([query], query_sheets=True)[0]
    return result.sheets, result.hits

  def run(self, queries: list[Query], *, with_source: bool = True, query_sheets: bool = False) -> list[Result]:
    """Every search of ``queries`` (one per query and cut-off), in order, each with its record.
    ``query_sheets``: also give a query by patent its drawings (for a report or the page)."""
    results = []
    for start in range(0, len(queries), BATCH_QUERIES):
      resolved = [self._resolve(q, query_sheets) for q in queries[start:start + BATCH_QUERIES]]
      self._embed(resolved)
      searches = [(r, cutoff) for r in resolved for cutoff in r.cutoffs]
      wants = [self.catalog.wanted(r.query.filters, None if c is None else np.datetime64(c, 'D'), r.family)
               for r, c in searches]
      hits = self.catalog.search(np.stack([r.vector for r, _ in searches]), wants, [r.query.top for r, _ in searches])
      for (r, cutoff), want, found in zip(searches, wants, hits):
        filters = {'before': cutoff, 'before_from': r.before_from if cutoff else None, **r.query.filters.to_json()}
        if r.query.patent:
          filters['family_left_out'] = list(r.family_ids)
        rec = record_lib.make(model=self.index.manifest.model, index=self.catalog.identity(),
                              query=r.query.to_json(r.image_bytes), filters=filters,
                              patents_searched=self.catalog.patents_passing(want), hits=found, with_source=with_source)
        results.append(Result(r.query, cutoff, r.sheets, found, rec))
    return results

  def _resolve(self, query: Query, query_sheets: bool) -> _Resolved:
    """A query's drawings read and preprocessed (or its patent's vector), its cut-offs and the family it leaves out."""
    if not query.patent:
      data = [image.read() for image in query.images]
      sheets = [self.preprocess(d, image.name) for image, d in zip(query.images, data)]
      return _Resolved(query, data, sheets, cutoffs=query.filters.before or (None,),
                       before_from='given' if query.filters.before else '')
    catalog = self.catalog
    number = catalog.patent_number(query.patent)
    rows = catalog.drawing_rows(number)
    if not len(rows):
      raise SearchError(f'patent {query.patent} has no drawings in index {self.index_dir}')
    cutoffs, before_from = query.filters.before, 'given'
    if not cutoffs:
      day = self.index.meta['effective_filing_date'][rows[0]]
      if np.isnat(day):
        catalog.require('effective_filing_date', f'a query by patent ({query.patent}) without --before')
        raise SearchError(f'patent {query.patent} has no effective filing date in index {self.index_dir}: '
                          'give the cut-off with --before')
      cutoffs, before_from = (str(day),), "query patent's effective filing date"
    vector = l2_normalize(l2_normalize(self.index.vectors[rows].astype(np.float32)).mean(axis=0))
    sheets = [catalog.drawing(int(r)) for r in rows] if query_sheets else []
    return _Resolved(query, [], [s for s in sheets if s], vector, int(catalog.patent_family[number]),
                     (str(catalog.patent_ids[number]),) + catalog.family(number), cutoffs, before_from)

  def _embed(self, resolved: list[_Resolved]) -> None:
    """Every query vector still missing, from one embedding call for all drawings and one for all words."""
    todo = [r for r in resolved if r.vector is None]
    views = self._embed_sheets([s for r in todo for s in r.sheets])
    words = self._embed_texts([r.query.text.strip() for r in todo if r.query.text and r.query.text.strip()])
    at_view = at_word = 0
    for r in todo:
      text = r.query.text and r.query.text.strip()
      r.vector = _combine(views[at_view:at_view + len(r.sheets)], words[at_word] if text else None)
      at_view, at_word = at_view + len(r.sheets), at_word + bool(text)

  # -- drawings for display -------------------------------------------------------------------------

  def thumbnail(self, hit: Hit) -> bytes | None:
    """The hit's drawing as the index embedded it (PNG); for a caption hit, the patent's first drawing."""
    return self.catalog.drawing(hit.row)


def _combine(views: np.ndarray, words: np.ndarray | None) -> np.ndarray:
  parts = [l2_normalize(l2_normalize(views).mean(axis=0))] if len(views) else []
  if words is not None:
    parts.append(l2_normalize(words))
  return l2_normalize(np.mean(parts, axis=0))
