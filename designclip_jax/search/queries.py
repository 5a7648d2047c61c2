"""What a search asks: a patent of the index (its drawings), query drawings and/or words, with its own filters
and number of results; from the command line, a queries file (JSON Lines) or the page.

A queries file holds one JSON object per line (blank lines are skipped)::

  {"id": "q1", "patent": "D0907292"}
  {"id": "q2", "images": ["chair-front.tif", "chair-side.png"], "locarno": "06", "before": "2019-06-30"}
  {"text": "a lamp with a conical shade", "class": ["D26"], "top": 50, "target": "all"}

``patent``, or ``images`` (paths relative to the file's folder) and/or ``text``; ``before``, ``locarno``, ``class``
(a string, commas allowed, or a list), ``top``, ``target``, and ``id`` (copied into the line's records) are
optional. Any other key is an error (a misspelt filter must not be dropped silently).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from etils import epath

from designclip_jax.search import filters as filters_lib
from designclip_jax.search.filters import Filters
from designclip_jax.search.index import SearchError

KEYS = ('id', 'patent', 'images', 'text', 'before', 'locarno', 'class', 'top', 'target')


@dataclasses.dataclass(frozen=True)
class Image:
  """A query drawing: its name as given (a path on the command line, the file name of an upload) and its bytes,
  read when the search runs (a queries file's drawings are not all held at once)."""
  name: str
  path: str | None = None
  data: bytes | None = None

  def read(self) -> bytes:
    if self.data is not None:
      return self.data
    if not epath.Path(self.path).is_file():  # local or gs://
      raise SearchError(f'query image {self.name} does not exist')
    return epath.Path(self.path).read_bytes()


@dataclasses.dataclass(frozen=True)
class Query:
  filters: Filters = Filters()
  top: int = 20
  patent: str | None = None
  images: tuple[Image, ...] = ()
  text: str | None = None
  label: str | None = None  # the caller's name for it ('id' in a queries file)

  def check(self, prefix: str = '', max_top: int | None = None) -> 'Query':
    if self.patent and (self.images or self.text):
      raise SearchError(f'{prefix}a query by patent takes no drawings or words: its drawings are the query')
    if not self.patent and not self.images and not (self.text and self.text.strip()):
      raise SearchError(f'{prefix}give a patent of the index, query drawings and/or words')
    if not isinstance(self.top, int) or isinstance(self.top, bool) or self.top < 1 or (max_top and self.top > max_top):
      bound = f'between 1 and {max_top}' if max_top else 'at least 1'
      raise SearchError(f'{prefix}top must be {bound}, got {self.top!r}')
    return self

  def to_json(self, image_bytes: list[bytes] | None = None) -> dict:
    """The query as a record files it: the patent, or each drawing's name and SHA-256, and the words."""
    out = {'id': self.label} if self.label is not None else {}
    if self.patent:
      out['patent'] = self.patent
    if self.images:
      out['images'] = [{'name': os.path.basename(image.name), 'sha256': hashlib.sha256(data).hexdigest()}
                       for image, data in zip(self.images, image_bytes)]
    if self.text and self.text.strip():
      out['text'] = self.text.strip()
    return {**out, 'top': self.top, 'target': self.filters.target}


def read_queries(path: str, *, top: int = 20, target: str = 'drawings') -> list[Query]:
  """Every query of a queries file, checked (one-line errors naming the file and line) before any search runs;
  ``top`` and ``target`` are the defaults of lines that do not say."""
  if not epath.Path(path).is_file():
    raise SearchError(f'--queries {path} does not exist')
  folder = os.path.dirname(path)
  out = []
  for number, line in enumerate(epath.Path(path).read_text().splitlines(), 1):
    if not line.strip():
      continue
    prefix = f'{path} line {number}: '
    try:
      raw = json.loads(line)
    except json.JSONDecodeError as e:
      raise SearchError(f'{prefix}not JSON ({e.msg} at column {e.colno})') from None
    if not isinstance(raw, dict):
      raise SearchError(f'{prefix}a query is a JSON object, got {type(raw).__name__}')
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
      raise SearchError(f'{prefix}unknown key(s) {", ".join(unknown)}; a query takes {", ".join(KEYS)}')
    names = [os.path.join(folder, p) if not os.path.isabs(p) and '://' not in p else p
             for p in filters_lib.items(raw.get('images'), prefix + 'images')]
    missing = [n for n in names if not epath.Path(n).is_file()]
    if missing:
      raise SearchError(f'{prefix}query image {missing[0]} does not exist')
    text, patent = raw.get('text'), raw.get('patent')
    for key, value in (('text', text), ('patent', patent), ('id', raw.get('id'))):
      if value is not None and not isinstance(value, str):
        raise SearchError(f'{prefix}{key} must be a string, got {value!r}')
    chosen = filters_lib.parse(raw.get('before'), raw.get('locarno'), raw.get('class'), raw.get('target', target),
                               prefix=prefix, names=('before', 'locarno', 'class', 'target'))
    out.append(Query(chosen, raw.get('top', top), patent or None, tuple(Image(n, path=n) for n in names), text,
                     raw.get('id')).check(prefix))
  if not out:
    raise SearchError(f'--queries {path} holds no query')
  return out
