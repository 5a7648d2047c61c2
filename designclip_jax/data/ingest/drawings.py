"""The decoding stage: a row's drawings read, preprocessed and PNG-encoded into its record; the
per-process state of the worker processes that run it."""

from __future__ import annotations

import hashlib

from designclip_jax.data import images as image_ops
from designclip_jax.data.impact import VIEWS
from designclip_jax.data.ingest.rows import RowItem, RowResult
from designclip_jax.data.ingest.sources import ImageSource, open_part
from designclip_jax.data.layout import serialize


def load_patent(item: RowItem, source: ImageSource, image_size: int) -> RowResult:
  """Read, preprocess and PNG-encode one row's drawings; unreadable ones are reported."""
  result = RowResult(item.key, item.source, item.row, item.patent_id, list(item.issues), block=item.block)
  patent = item.patent
  if patent is None or item.split is None:
    return result
  encoded, views, problems = [], [], []
  for name, view in zip(patent.image_files, patent.image_views):
    try:
      gray = image_ops.preprocess_sheet(image_ops.load_gray(source.read(name)), image_size)
    except FileNotFoundError:
      problems.append(f'missing image: {name}')
      continue
    except Exception as e:  # pylint: disable=broad-except  (PIL raises many types for corrupt files)
      problems.append(f'unreadable image: {name} ({e.__class__.__name__})')
      continue
    encoded.append(image_ops.encode_png(gray))
    views.append(VIEWS.index(view))
  if not encoded:
    result.issues.append(('; '.join(problems) or 'no images', 'skipped'))
    return result
  result.issues += [(f'{p} (image dropped)', 'repaired') for p in problems]
  result.split, result.mapping = item.split, patent.mapping
  result.image_hashes = [hashlib.sha256(png).hexdigest()[:16] for png in encoded]
  result.example = {'patent_id': patent.patent_id, 'title': patent.title, 'caption': patent.caption,
                    'label': patent.label, 'images': encoded, 'views': views, 'family': item.family,
                    'locarno': patent.locarno}
  return result


_WORKER: dict = {}


def init_worker(image_size: int) -> None:
  _WORKER.clear()
  _WORKER.update(image_size=image_size, sources={})


def worker_source(location: str) -> ImageSource:
  """This process's image source for ``location``, opened on first use and kept (one at a time: rows
  arrive in CSV order, so a yearly zip serves a long run of rows)."""
  sources = _WORKER['sources']
  if location not in sources:
    for old in sources.values():
      old.close()
    sources.clear()
    sources[location] = ImageSource(location)
  return sources[location]


def process_row(item: RowItem) -> RowResult:
  """Worker: one row -> its serialized record (only the row travels to the worker)."""
  if item.part is not None:  # a Red Book grant: its own small zip or folder, opened for it alone
    source = open_part(item.part)
    try:
      result = load_patent(item, source, _WORKER['image_size'])
    finally:
      source.close()
  else:
    result = load_patent(item, worker_source(item.images), _WORKER['image_size'])
  if result.example is not None:
    result.serialized = serialize(result.example)
    result.example = {k: v for k, v in result.example.items() if k != 'images'}  # metadata only back
  return result
