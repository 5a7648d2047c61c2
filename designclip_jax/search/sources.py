"""What an index embeds, one kind of source each: an ingested data set (its drawings and captions), a plain
folder of drawings, or a DeepPatent tree (its list files and PNGs).

A source is split into parts (an ingested set's splits, a DeepPatent split's lists, a folder's one part)
and each part into fixed ranges of units (patents of an ingested set; files of a folder or DeepPatent
list), the shards an index resumes by. A file source's drawings are read lazily, so each process decodes
only the rows it embeds; an unreadable file is left out of its shard and counted, not fatal.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import itertools
import os
from typing import Callable, Sequence

import numpy as np
from etils import epath

from designclip_jax.data import images as image_ops
from designclip_jax.data import pipeline
from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.data.impact import VIEWS
from designclip_jax.data.layout import PATENTS_FILE, SPLITS
from designclip_jax.eval import deeppatent
from designclip_jax.search import patents

KINDS = ('ingested', 'folder', 'deeppatent')
IMAGE_SUFFIXES = ('.tif', '.tiff', '.png', '.jpg', '.jpeg')
FOLDER_PART = 'all'
FILES_PER_RECORD = 8  # a file source's shard holds records_per_shard x this many files (~ drawings per patent)
META_COLUMNS = ('kind', 'patent_id', 'title', 'class', 'view', 'dataset', 'split', 'record', 'image', 'path') + \
    patents.FIELDS


class SourceError(ValueError):
  """A source that cannot be indexed as asked; the message names the directory."""


@dataclasses.dataclass
class Shard:
  """One shard's rows: metadata columns (drawings first, then captions), the drawings to embed (items for
  ``eval.embed.embed_images``, turned into uint8 sheets by ``load``; None: items are PNG sheets) and texts."""
  meta: dict
  drawings: Sequence
  texts: list
  load: Callable[[object], np.ndarray] | None = None


def _parts(requested, known, probe) -> list[str]:
  """The requested splits, each checked by ``probe`` (which raises a clear ValueError for one not there), or
  the ``known`` splits that are there."""
  if requested:
    for split in requested:
      probe(split)
    return list(requested)
  present = []
  for split in known:
    try:
      probe(split)
      present.append(split)
    except ValueError:
      continue
  return present


def _rows(meta: dict, **columns) -> None:
  for c in META_COLUMNS:
    meta[c].append(columns[c] if c in columns or c not in patents.NONE else patents.NONE[c])


class IngestedSource:
  """An ingested data set (``python -m designclip_jax.data.ingest``): every drawing and non-empty caption."""
  kind = 'ingested'

  def __init__(self, location: str, number: int):
    self.location, self.number = location, number
    self._dates, self._record_indexes = None, {}

  def parts(self, requested) -> list[str]:
    present = _parts(requested, SPLITS, lambda split: pipeline.open_split(self.location, split))
    if not present:
      raise SourceError(f'{self.location} holds none of the splits {SPLITS}')
    return present

  def sheet_size(self, part: str) -> int:
    first = next(pipeline.eval_records(self.location, part), None)
    if first is None or not first['images']:
      raise SourceError(f'split {part!r} of {self.location} holds no drawings to index')
    return int(image_ops.decode_png(first['images'][0]).shape[0])

  def units(self, part: str) -> int:
    return len(pipeline.open_split(self.location, part))

  def patent_fields(self, parts) -> tuple[list[str], str]:
    """The patent fields this set gives (``patents.FIELDS``) and why any are missing."""
    notes, fields = [], set()
    dates = self._patent_dates()
    if dates is None:
      notes.append(f'no {PATENTS_FILE} (ingested from CSV alone): no dates, each patent its own family')
    else:
      fields |= {'grant_date', 'effective_filing_date'}
      if dates.without_filing_date:
        notes.append(f'{dates.without_filing_date} patents without a filing date have no effective filing date')
    indexes = [self._record_index(part) for part in parts]
    if None in indexes:
      notes.append('its record index predates families and Locarno codes: ingest it again to have them')
    elif any((index.locarno != '').any() for index in indexes):
      fields.add('locarno')
    else:
      notes.append('no record gives a Locarno code')
    if dates is not None and None not in indexes:
      fields.add('family_id')
    return [f for f in patents.FIELDS if f in fields], '; '.join(notes)

  def _patent_dates(self):
    if self._dates is None:
      path = epath.Path(self.location, PATENTS_FILE)
      self._dates = patents.read_dates(str(path)) if path.is_file() else False
    return self._dates or None

  def _record_index(self, part: str):
    if part not in self._record_indexes:
      try:
        self._record_indexes[part] = pipeline.record_index(self.location, part)
      except FileNotFoundError:  # ingested before record indexes carried families and Locarno codes
        self._record_indexes[part] = None
    return self._record_indexes[part]

  def _patent_columns(self, records: list[dict], part: str) -> list[dict]:
    """Each record's ``patents.FIELDS`` (blank where the set does not give them)."""
    index, dates = self._record_index(part), self._patent_dates()
    nat = np.full(len(records), np.datetime64('NaT'), 'datetime64[D]')
    grant, effective = dates.lookup([r['patent_id'] for r in records]) if dates else (nat, nat)
    return [{'grant_date': g, 'effective_filing_date': e,
             'locarno': str(index.locarno[r['index']]) if index is not None else '',
             'family_id': str(index.family[r['index']]) if index is not None else ''}
            for r, g, e in zip(records, grant.astype(object), effective.astype(object))]

  def shards(self, part: str, per_shard: int, sheet_size: int):
    """(start, stop, a function building the shard) for every shard of ``part``, in order; the records are
    read as the shard is built, or skipped over when it is not."""
    del sheet_size  # stored at the data set's own size, checked against the index's when it was added
    records, total = pipeline.eval_records(self.location, part), self.units(part)
    for start in range(0, total, per_shard):
      group = itertools.islice(records, per_shard)
      yield start, min(start + per_shard, total), lambda group=group: self._shard(list(group), part)
      collections.deque(group, maxlen=0)  # not built (already indexed): move past its records

  def _shard(self, records: list[dict], part: str) -> Shard:
    meta = {c: [] for c in META_COLUMNS}
    pngs, texts = [], []
    fields = dict(zip((r['index'] for r in records), self._patent_columns(records, part)))
    common = lambda r: dict(patent_id=r['patent_id'], title=r['title'], dataset=self.number, split=part,
                            record=r['index'], path='', **{'class': CLASS_CODES[r['label']]}, **fields[r['index']])
    for r in records:
      for i, png in enumerate(r['images']):
        view = VIEWS[r['views'][i]] if i < len(r['views']) else 'unknown'
        _rows(meta, kind='drawing', view=view, image=i, **common(r))
        pngs.append(png)
    for r in records:
      if r['caption'].strip():
        _rows(meta, kind='caption', view='', image=-1, **common(r))
        texts.append(r['caption'])
    return Shard(meta, pngs, texts)

  def drawing(self, split: str, record: int, image: int, path: str, sheet_size: int) -> bytes | None:
    """The stored PNG sheet (a caption's patent: its first drawing); None where the set is gone."""
    del path, sheet_size
    try:
      drawings = _open_split(self.location, split)[record]['images']
    except (FileNotFoundError, ValueError, IndexError):
      return None
    return drawings[max(image, 0)] if len(drawings) else None


class _FileSource:
  """Drawings as image files under ``location``; a part is a deterministic list of relative paths."""

  def __init__(self, location: str, number: int):
    self.location, self.number = location, number
    self._listings = {}

  def patent_fields(self, parts) -> tuple[list[str], str]:
    del parts
    return [], patents.FILE_SOURCE_NOTE

  def listing(self, part: str) -> list[str]:
    if part not in self._listings:
      self._listings[part] = self._list(part)
    return self._listings[part]

  def _list(self, part: str) -> list[str]:
    raise NotImplementedError

  def patent_of(self, relative: str) -> str:
    """The patent a drawing belongs to: its folder's name (one folder per design), or the file's stem."""
    folder = os.path.basename(os.path.dirname(relative))
    return folder or os.path.splitext(os.path.basename(relative))[0]

  def sheet_size(self, part: str) -> None:
    del part
    return None  # preprocessed to the index's size

  def units(self, part: str) -> int:
    return len(self.listing(part))

  def fingerprint(self, part: str) -> dict:
    """What resuming checks: the listing has not changed since the part's first shard was written."""
    listing = self.listing(part)
    return {'files': len(listing), 'sha256': hashlib.sha256('\n'.join(listing).encode()).hexdigest()}

  def shards(self, part: str, per_shard: int, sheet_size: int):
    listing, per_shard = self.listing(part), per_shard * FILES_PER_RECORD
    for start in range(0, len(listing), per_shard):
      stop = min(start + per_shard, len(listing))
      yield start, stop, lambda start=start, stop=stop: self._shard(listing[start:stop], start, part, sheet_size)

  def _shard(self, files: list[str], start: int, part: str, sheet_size: int) -> Shard:
    meta = {c: [] for c in META_COLUMNS}
    for number, relative in enumerate(files, start):
      _rows(meta, kind='drawing', patent_id=self.patent_of(relative), title='', view='', dataset=self.number,
            split=part, record=number, image=0, path=relative, **{'class': ''})
    load = lambda relative: image_ops.preprocess_sheet(image_ops.load_gray(os.path.join(self.location, relative)),
                                                       sheet_size)
    return Shard(meta, files, [], load)

  def drawing(self, split: str, record: int, image: int, path: str, sheet_size: int) -> bytes | None:
    """The file, preprocessed as the index's drawings were; None where it is gone or unreadable."""
    del split, record, image
    try:
      return image_ops.encode_png(image_ops.preprocess_sheet(image_ops.load_gray(os.path.join(self.location, path)),
                                                             sheet_size))
    except (OSError, ValueError):
      return None


class FolderSource(_FileSource):
  """Every TIFF / PNG / JPEG under a folder (hidden names and links to folders skipped), in sorted order."""
  kind = 'folder'

  def parts(self, requested) -> list[str]:
    del requested
    if not os.path.isdir(self.location):
      raise SourceError(f'{self.location} is not a folder')
    if not self.listing(FOLDER_PART):
      raise SourceError(f'{self.location} holds no drawings ({", ".join(IMAGE_SUFFIXES)} files)')
    return [FOLDER_PART]

  def _list(self, part: str) -> list[str]:
    del part
    found = []
    for folder, subfolders, files in os.walk(self.location):
      subfolders[:] = sorted(d for d in subfolders if not d.startswith('.'))
      found += [os.path.relpath(os.path.join(folder, f), self.location) for f in sorted(files)
                if not f.startswith('.') and f.lower().endswith(IMAGE_SUFFIXES)]
    return found


class DeepPatentSource(_FileSource):
  """The drawings a DeepPatent split lists (its query list, then the DB list's others), each under its patent
  folder (``I<date>/<patent>-<date>/<patent>-<date>-D<sheet>.png``)."""
  kind = 'deeppatent'

  def parts(self, requested) -> list[str]:
    present = _parts(requested, deeppatent.SPLITS, lambda split: deeppatent.list_files(self.location, split))
    if not present:
      raise SourceError(f'{self.location} holds no DeepPatent list files (<split>_query_patent.txt and '
                        f'<split>_db_patent.txt for a split of {deeppatent.SPLITS}, in it or in its data/)')
    return present

  def _list(self, part: str) -> list[str]:
    paths = [p for list_file in deeppatent.list_files(self.location, part) for p in deeppatent.read_list(list_file)[0]]
    return list(dict.fromkeys(paths))


def open_source(kind: str, location: str, number: int):
  if kind not in KINDS:
    raise SourceError(f'source kind {kind!r} is not one of {KINDS}')
  return {'ingested': IngestedSource, 'folder': FolderSource, 'deeppatent': DeepPatentSource}[kind](location, number)


@functools.lru_cache(maxsize=16)
def _open_split(data_dir: str, split: str):
  return pipeline.open_split(data_dir, split)
