"""Where drawings come from: a folder or a zip archive, found by file name wherever IMPACT's layouts put
them."""

from __future__ import annotations

import os
import re
import zipfile

from designclip_jax.data.ingest.rows import IngestError


def _candidate_names(name: str) -> list[str]:
  """Where a drawing may sit: NAME, STEM/NAME (one folder per patent, IMPACT's layout) and both under a
  YEAR/ folder (an unpacked yearly zip), STEM being the name up to '-D<sheet>'."""
  stem = name.rsplit('-D', 1)[0]
  year = re.search(r'-(\d{4})\d{4}$', stem)
  names = [name, f'{stem}/{name}']
  if year:
    names += [f'{year.group(1)}/{name}', f'{year.group(1)}/{stem}/{name}']
  return names


class ImageSource:
  """Reads drawings by file name from a directory or a zip archive. Opened once per process (it is
  never pickled): a zip keeps its handle, a directory is probed by path, so no per-file index of the
  whole tree is built."""

  def __init__(self, location: str):
    self.location = location
    self._zip = zipfile.ZipFile(location) if os.path.isfile(location) else None
    self._basenames = None  # zip members by base name, built on the first name not at a standard place

  def read(self, name: str) -> bytes:
    if self._zip is None:
      for candidate in _candidate_names(name):
        path = os.path.join(self.location, candidate)
        if os.path.isfile(path):
          with open(path, 'rb') as f:
            return f.read()
      raise FileNotFoundError(name)
    members = self._zip.NameToInfo
    member = next((c for c in _candidate_names(name) if c in members), None)
    if member is None:
      if self._basenames is None:
        self._basenames = {os.path.basename(n): n for n in members if not n.endswith('/')}
      member = self._basenames.get(name)
    if member is None:
      raise FileNotFoundError(name)
    return self._zip.read(member)

  def close(self):
    if self._zip is not None:
      self._zip.close()


def images_location(images: str, csv_path: str) -> str:
  """The drawings of one CSV: ``images`` itself, or ``images/<csv stem>.zip`` when ``images`` is a
  directory holding it (IMPACT ships ``2021.csv`` with ``2021.zip``)."""
  if os.path.isdir(images):
    paired = os.path.join(images, os.path.splitext(os.path.basename(csv_path))[0] + '.zip')
    if os.path.isfile(paired):
      return paired
  return images


def check_images(location: str) -> None:
  if os.path.isdir(location):
    return
  if not os.path.exists(location):
    raise IngestError(f'{location}: --images path does not exist')
  try:
    with zipfile.ZipFile(location) as zf:
      zf.infolist()
  except (zipfile.BadZipFile, OSError) as e:
    raise IngestError(f'{location}: not a readable zip file or directory ({e})') from None
