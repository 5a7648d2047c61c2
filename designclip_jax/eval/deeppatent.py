"""DeepPatent image retrieval from the data set's own files (GoFigure-LANL/DeepPatent-dataset).

A split is two list files, ``<split>_query_patent.txt`` and ``<split>_db_patent.txt`` (in ROOT or
ROOT/data), one image per line: ``<path relative to ROOT> <label>``, the label naming the patent. Every
query is scored against the whole DB, relevant = same label (``metrics.image_retrieval``). Drawings are
preprocessed as ours are (grayscale, cropped to the drawing, aspect kept, padded white).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image

from designclip_jax.data import images as image_ops
from designclip_jax.eval.embed import embed_images, place_on_devices

SPLITS = ('test', 'val')
SHOWN_MISSING = 5  # paths named in a missing-image message


def list_files(root: str, split: str) -> tuple[str, str]:
  """The (query, db) list files of ``split``, from ROOT or ROOT/data."""
  if split not in SPLITS:
    raise ValueError(f'DeepPatent split must be one of {SPLITS}, got {split!r}')
  names = (f'{split}_query_patent.txt', f'{split}_db_patent.txt')
  for folder in (root, os.path.join(root, 'data')):
    if all(os.path.isfile(os.path.join(folder, n)) for n in names):
      return tuple(os.path.join(folder, n) for n in names)
  raise ValueError(f'{names[0]} and {names[1]} not found in {root} or {os.path.join(root, "data")}: '
                   '--deeppatent takes the root of the DeepPatent download')


def read_list(path: str) -> tuple[list[str], np.ndarray]:
  """(relative image paths, labels as strings) of one list file; a malformed line is an error naming it."""
  paths, labels = [], []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      parts = line.split()
      if len(parts) != 2:
        raise ValueError(f'{path}:{number}: expected "<relative/path.png> <label>", got {line.strip()!r}')
      paths.append(parts[0])
      labels.append(parts[1])
  if not paths:
    raise ValueError(f'{path} lists no images')
  return paths, np.array(labels)


def _readable(path: str) -> bool:
  try:
    with Image.open(path) as image:
      image.verify()  # reads the whole file: a truncated or corrupt image fails here, not mid-embedding
    return True
  except (OSError, SyntaxError, ValueError):
    return False


def _readable_everywhere(paths: list[str]) -> np.ndarray:
  """Which paths are readable. Each process opens only its share (every process-count-th path), then all
  processes agree on one answer: none reads the whole list, and none goes on with a different list (which
  would leave the others waiting in a collective)."""
  count, index = jax.process_count(), jax.process_index()
  unreadable = np.zeros(len(paths), bool)
  unreadable[index::count] = [not _readable(p) for p in paths[index::count]]
  if count > 1:
    unreadable = np.asarray(multihost_utils.process_allgather(unreadable)).any(axis=0)
  return ~unreadable


def _drop_missing(root, paths, labels, skip_missing, what):
  ok = _readable_everywhere([os.path.join(root, p) for p in paths])
  bad = [p for p, good in zip(paths, ok) if not good]
  if bad and not skip_missing:
    raise ValueError(f'{len(bad)} of the {len(paths)} {what} images are missing or unreadable under {root} '
                     f'(first: {", ".join(bad[:SHOWN_MISSING])}); pass --skip-missing to score without them')
  return [p for p, good in zip(paths, ok) if good], labels[ok], bad


def embed_split(clip, root: str, split: str, *, batch_size: int = 128, normalization: str = 'clip',
                skip_missing: bool = False, progress: bool = True) -> dict:
  """Embeddings of a DeepPatent split: the keys ``--embeddings`` reads for image retrieval (query,
  query_labels, gallery, gallery_labels) and ``skipped_missing``, the number of images left out."""
  query_list, db_list = list_files(root, split)
  clip = place_on_devices(clip)  # once for both lists
  size = clip.config.vision.image_size
  load = lambda path: image_ops.preprocess_sheet(image_ops.load_gray(path), size)
  out = {'skipped_missing': 0}
  for key, list_path, what in (('query', query_list, 'query'), ('gallery', db_list, 'DB')):
    paths, labels = read_list(list_path)
    paths, labels, bad = _drop_missing(root, paths, labels, skip_missing, f'{split} {what}')
    if not paths:
      raise ValueError(f'none of the {len(bad)} {split} {what} images listed in {list_path} could be read')
    out['skipped_missing'] += len(bad)
    out[key] = embed_images(clip, [os.path.join(root, p) for p in paths], batch_size=batch_size,
                            progress=progress, normalization=normalization, load=load)
    out[f'{key}_labels'] = labels
  return out
