"""DeepPatent image retrieval from the data set's own files (GoFigure-LANL/DeepPatent-dataset).

A split is two list files, ``<split>_query_patent.txt`` and ``<split>_db_patent.txt`` (in ROOT or
ROOT/data), one image per line: ``<path relative to ROOT> <label>``, the label naming the patent (text,
compared as text, as the official code compares it). Every query is scored against the whole DB, relevant =
same label (``metrics.image_retrieval``); every query's label must have DB images. Drawings are embedded
here, preprocessed as ours are (grayscale, cropped to the drawing, aspect kept, padded white), or their
features come from a file another tool wrote, matched to the lists by image path.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from designclip_jax.data import images as image_ops
from designclip_jax.eval.embed import embed_images, place_on_devices

SPLITS = ('test', 'val')
SHOWN_MISSING = 5  # paths named in a missing-image message
# (paths, embeddings) key pairs of a features file, any of them: ours (--save-embeddings) or one pool
FEATURE_KEYS = (('query_paths', 'query'), ('gallery_paths', 'gallery'), ('paths', 'embeddings'))


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


def read_split(root: str, split: str) -> dict:
  """The split's lists: {'query': (paths, labels, list file), 'gallery': (paths, labels, list file)}. A query
  whose label has no DB image is an error (the lists do not belong together)."""
  query_list, db_list = list_files(root, split)
  lists = {'query': read_list(query_list) + (query_list,), 'gallery': read_list(db_list) + (db_list,)}
  paths, labels, _ = lists['query']
  alone = np.flatnonzero(~np.isin(labels, lists['gallery'][1]))
  if alone.size:
    shown = ', '.join(f'{paths[i]} (label {labels[i]})' for i in alone[:SHOWN_MISSING])
    raise ValueError(f'{alone.size} of the {len(paths)} queries in {query_list} have a label with no image in {db_list} '
                     f'(first: {shown}): the list files do not belong together')
  return lists


def _readable(path: str) -> bool:
  try:  # open_image refuses a drawing past data.images.MAX_PIXELS from its header (ImageTooLargeError)
    with image_ops.open_image(path) as image:
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


def _keep_present(paths, labels, present, skip_missing, problem):
  """(paths, labels) of the present images and the missing paths; any missing one is an error (its
  ``problem`` named) unless ``skip_missing``."""
  present = np.asarray(present, bool)
  bad = [p for p, ok in zip(paths, present) if not ok]
  if bad and not skip_missing:
    raise ValueError(f'{len(bad)} of the {len(paths)} {problem} (first: {", ".join(bad[:SHOWN_MISSING])}); pass '
                     '--skip-missing to score without them')
  return [p for p, ok in zip(paths, present) if ok], labels[present], bad


def embed_split(clip, root: str, split: str, *, batch_size: int = 128, normalization: str = 'clip',
                skip_missing: bool = False, progress: bool = True) -> dict:
  """Embeddings of a DeepPatent split: the keys ``--embeddings`` reads for image retrieval (query,
  query_labels, gallery, gallery_labels), the image paths (query_paths, gallery_paths, as listed) and
  ``skipped_missing``, the number of images left out."""
  lists = read_split(root, split)
  clip = place_on_devices(clip)  # once for both lists
  size = clip.config.vision.image_size
  load = lambda path: image_ops.preprocess_sheet(image_ops.load_gray(path), size)
  out = {'skipped_missing': 0}
  for key, (paths, labels, list_path) in lists.items():
    what = f'{split} {"query" if key == "query" else "DB"}'
    readable = _readable_everywhere([os.path.join(root, p) for p in paths])
    paths, labels, bad = _keep_present(paths, labels, readable, skip_missing,
                                       f'{what} images are missing, unreadable or past the pixel limit under {root}')
    if not paths:
      raise ValueError(f'none of the {len(bad)} {what} images listed in {list_path} could be read')
    out['skipped_missing'] += len(bad)
    out[key] = embed_images(clip, [os.path.join(root, p) for p in paths], batch_size=batch_size,
                            progress=progress, normalization=normalization, load=load)
    out[f'{key}_labels'], out[f'{key}_paths'] = labels, np.array(paths)
  return out


def _path_key(path: str, root: str) -> str:
  """A listed image's path as the lists write it: relative to ROOT (an absolute path under ROOT is made so)."""
  path = str(path)
  if os.path.isabs(path):
    path = os.path.relpath(path, os.path.abspath(root))
  return os.path.normpath(path)


def _feature_rows(features, root: str) -> tuple[list[np.ndarray], dict]:
  """The embedding arrays of a features file and {image path: (array number, row)}."""
  pairs = [(p, e) for p, e in FEATURE_KEYS if p in features and e in features]
  if not pairs:
    raise ValueError('the embeddings file holds no image paths to match with the DeepPatent lists: it needs one of '
                     + ', '.join(f'{p} + {e}' for p, e in FEATURE_KEYS) + f' (has {sorted(features)})')
  arrays = [np.asarray(features[key]) for _, key in pairs]  # an .npz member is read on each access: once here
  rows = {}
  for number, (paths_key, key) in enumerate(pairs):
    paths = np.asarray(features[paths_key])
    if paths.ndim != 1 or arrays[number].ndim != 2 or len(paths) != len(arrays[number]):
      raise ValueError(f'{paths_key} {paths.shape} must name one image per row of {key} {arrays[number].shape}')
    for row, path in enumerate(paths):
      known = rows.setdefault(_path_key(path, root), (number, row))
      if known != (number, row) and not np.array_equal(arrays[known[0]][known[1]], arrays[number][row]):
        raise ValueError(f'{path} has two different embeddings in the embeddings file ({pairs[known[0]][1]} and {key})')
  return arrays, rows


def features_by_path(features, root: str, split: str, *, skip_missing: bool = False) -> dict:
  """A DeepPatent split's embeddings taken by image path from ``features`` (an .npz's arrays, written by
  ``--save-embeddings`` or by another tool: any of the pairs in FEATURE_KEYS, paths as the list files write
  them), labels from the list files: the keys ``embed_split`` returns. A listed image without features is
  an error naming it, or, with ``skip_missing``, left out and counted in ``skipped_missing``."""
  lists = read_split(root, split)
  arrays, rows = _feature_rows(features, root)
  out = {'skipped_missing': 0}
  for key, (paths, labels, list_path) in lists.items():
    found = [rows.get(_path_key(p, root)) for p in paths]
    paths, labels, missing = _keep_present(paths, labels, [f is not None for f in found], skip_missing,
                                           f'images listed in {list_path} have no features in the embeddings file')
    if not paths:
      raise ValueError(f'none of the images listed in {list_path} has features in the embeddings file')
    found = [f for f in found if f is not None]
    numbers, rows_of = {a for a, _ in found}, [r for _, r in found]
    if len(numbers) > 1:
      out[key] = np.stack([arrays[a][r] for a, r in found])
    elif rows_of == list(range(len(arrays[found[0][0]]))):
      out[key] = arrays[found[0][0]]  # the list's images in the list's order already: no copy
    else:
      out[key] = arrays[found[0][0]][rows_of]
    out['skipped_missing'] += len(missing)
    out[f'{key}_labels'], out[f'{key}_paths'] = labels, np.array(paths)
  return out
