"""Query an index by drawings and/or words; results grouped per patent (its best row and score)."""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
from PIL import UnidentifiedImageError

from designclip_jax.data import images as image_ops
from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.eval.embed import embed_images, embed_texts, place_on_devices
from designclip_jax.eval.metrics import l2_normalize
from designclip_jax.search import index as index_lib
from designclip_jax.search.index import KINDS, SearchError
from designclip_jax.search.topk import DeviceIndex

TARGETS = {'drawings': ('drawing',), 'captions': ('caption',), 'all': KINDS}
_CLASS = re.compile(r'^\s*D\s*0*(\d+)\s*$', re.I)


def parse_class(text: str | None) -> int:
  """A class as the JSON writes it ('D7'; 'd07' and 'D 7' too) -> class index; None or '' -> -1 (any)."""
  if not text:
    return -1
  m = _CLASS.match(text)
  code = f'D{int(m.group(1))}' if m else text
  if code not in CLASS_CODES:
    raise SearchError(f'--class {text!r} is not a USPC design class; use one of {", ".join(CLASS_CODES)}')
  return CLASS_CODES.index(code)


def check_top(top: int) -> None:
  if top < 1:
    raise SearchError(f'--top must be at least 1, got {top}')


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

  def to_json(self, with_source: bool = True) -> dict:
    """As JSON; ``with_source=False`` leaves out the directory (the server shows no paths of its machine)."""
    out = {'patent_id': self.patent_id, 'title': self.title, 'class': self.class_, 'score': self.score,
           'view': self.view, 'kind': self.kind, 'drawing': self.drawing}
    return {**out, 'source': self.source} if with_source else out


class Searcher:
  """An index on the devices plus the model that built it (checked by fingerprint)."""

  def __init__(self, index_dir: str, checkpoint: str | None = None, *, devices=None, batch_size: int = 32):
    from designclip_jax.weights.loader import load_model  # pylint: disable=import-outside-toplevel
    self.index_dir = index_dir
    self.index = index_lib.load(index_dir)
    manifest = self.index.manifest
    source = checkpoint or manifest.model['source']
    if checkpoint is None and not os.path.exists(source):
      raise SearchError(f'the model that built index {index_dir} ({source}) is no longer there; pass --checkpoint')
    self.clip, self.tokenizer, self.normalization = load_model(source)
    index_lib.check_same_model(manifest.model, index_lib.model_identity(source, self.clip, self.tokenizer,
                                                                          self.normalization), index_dir)
    self.clip = place_on_devices(self.clip)  # once, not on every query
    meta = self.index.meta
    class_ids = {c: i for i, c in enumerate(CLASS_CODES)}  # a class the source does not say: -1, never matched
    self.device_index = DeviceIndex(self.index.vectors, np.array([KINDS.index(k) for k in meta['kind']]),
                                    np.array([class_ids.get(c, -1) for c in meta['class']]), devices=devices)
    self.sources = [manifest.source(i) for i in range(len(manifest.datasets))]
    self.batch_size = batch_size

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
    parts = []
    if sheets:
      views = embed_images(self.clip, list(sheets), batch_size=self.batch_size, progress=False,
                           normalization=self.normalization)
      parts.append(l2_normalize(l2_normalize(views).mean(axis=0)))
    if text and text.strip():
      parts.append(l2_normalize(embed_texts(self.clip, self.tokenizer, [text.strip()], batch_size=self.batch_size,
                                                progress=False)[0]))
    if not parts:
      raise SearchError('a query needs at least one drawing or some words')
    return l2_normalize(np.mean(parts, axis=0))

  # -- search ---------------------------------------------------------------------------------------

  def search_vector(self, vector: np.ndarray, *, top: int = 20, class_code: str | None = None,
                    target: str = 'drawings') -> list[Hit]:
    """The ``top`` best patents for a unit query vector, each with its best matching row."""
    if target not in TARGETS:
      raise SearchError(f'target {target!r} is not one of {sorted(TARGETS)}')
    check_top(top)
    kinds = tuple(KINDS.index(k) for k in TARGETS[target])
    class_id = parse_class(class_code)
    meta = self.index.meta
    k = 8 * top
    while True:  # rows of one patent may crowd the top k: widen until `top` patents or every row is in
      k = min(1 << (k - 1).bit_length(), len(self.index))  # powers of two: few compiled shapes
      scores, rows = self.device_index.top_k(vector[None], k, kinds=kinds, class_id=class_id)
      rows, scores = rows[0][rows[0] >= 0], scores[0][rows[0] >= 0]
      best = {}
      for row, score in zip(rows.tolist(), scores.tolist()):
        best.setdefault(meta['patent_id'][row], (row, score))
      if len(best) >= top or len(rows) < k or k == len(self.index):
        break
      k *= 4
    return [self._hit(row, score) for row, score in list(best.values())[:top]]

  def search(self, images=(), text: str | None = None, **options) -> tuple[list[bytes], list[Hit]]:
    """``images``: (name, bytes) pairs. Returns the preprocessed query sheets and the hits."""
    sheets = [self.preprocess(data, name) for name, data in images]
    return sheets, self.search_vector(self.encode(sheets, text), **options)

  def _hit(self, row: int, score: float) -> Hit:
    m = {c: self.index.meta[c][row] for c in index_lib.META_COLUMNS}
    drawing = str(m['path']) or f'{m["split"]}:{m["record"]}:{m["image"]}'
    return Hit(patent_id=str(m['patent_id']), title=str(m['title']), class_=str(m['class']), score=float(score),
               view=str(m['view']), kind=str(m['kind']), drawing=drawing,
               source=self.sources[int(m['dataset'])].location, row=row)

  # -- drawings for display -------------------------------------------------------------------------

  def thumbnail(self, hit: Hit) -> bytes | None:
    """The hit's drawing as the index embedded it (PNG); for a caption hit, the patent's first drawing.
    None where its source is no longer at the indexed path."""
    m = {c: self.index.meta[c][hit.row] for c in ('dataset', 'split', 'record', 'image', 'path')}
    return self.sources[int(m['dataset'])].drawing(str(m['split']), int(m['record']), int(m['image']), str(m['path']),
                                                   self.index.manifest.sheet_size)
