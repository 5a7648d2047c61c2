"""Where inputs come from: drawings by file name in a folder or a zip archive, wherever IMPACT's layouts
put them, and the CSVs, on a local disk or in a bucket (gs://…, through etils.epath); and the parts of the USPTO's Red Book layout (weekly tars of per-grant ZIPs, folders of those
ZIPs, per-patent folders with the XML beside the sheets), found by name pattern at any depth."""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import re
import tarfile
import zipfile

from etils import epath

from designclip_jax.data.ingest.errors import IngestError
from designclip_jax.paths import is_url


def matching_files(pattern: str) -> list[str]:
  """The files a path or a glob names, sorted (local or gs://…)."""
  if not any(c in pattern for c in '*?['):
    return [pattern] if epath.Path(pattern).is_file() else []
  if not is_url(pattern):
    return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
  scheme, rest = pattern.split('://', 1)
  bucket, _, inner = rest.partition('/')
  return sorted(os.fspath(p) for p in epath.Path(f'{scheme}://{bucket}').glob(inner) if p.is_file())


def open_text(path: str):
  """A UTF-8 text file (local or gs://) for the csv module (newline='' as it asks)."""
  return io.TextIOWrapper(epath.Path(path).open('rb'), encoding='utf-8', newline='')


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
  """Reads drawings by file name from a directory or a zip archive, local or in a bucket. Opened once per
  process (it is never pickled): a zip keeps its handle (a bucket's zip is read by ranges, its central
  directory once), a directory is probed by path, so no per-file index of the whole tree is built."""

  def __init__(self, location: str, data: bytes | None = None):
    self.location = location  # a directory or zip file; with ``data``, the name of that in-memory zip
    self._file = None  # a bucket zip's open object
    if data is not None:
      self._zip = zipfile.ZipFile(io.BytesIO(data))
    elif is_url(location) and epath.Path(location).is_file():
      self._file = epath.Path(location).open('rb')
      self._zip = zipfile.ZipFile(self._file)
    else:
      self._zip = zipfile.ZipFile(location) if os.path.isfile(location) else None
    self._basenames = None  # zip members by base name, built on the first name not at a standard place

  def find(self, pattern: re.Pattern) -> bytes:
    """The first zip member (in archive order, at any depth) whose base name matches ``pattern``."""
    for name in self._zip.namelist():
      if pattern.fullmatch(os.path.basename(name)):
        return self._zip.read(name)
    raise FileNotFoundError(pattern.pattern)

  def read(self, name: str) -> bytes:
    if self._zip is None:
      for candidate in _candidate_names(name):
        try:  # one request per place in a bucket (no separate existence check)
          return epath.Path(self.location, candidate).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
          continue
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
    if self._file is not None:
      self._file.close()


def images_location(images: str, csv_path: str) -> str:
  """The drawings of one CSV: ``images`` itself, or ``images/<csv stem>.zip`` when ``images`` is a
  directory holding it (IMPACT ships ``2021.csv`` with ``2021.zip``)."""
  if epath.Path(images).is_dir():
    paired = os.path.join(images, os.path.splitext(os.path.basename(csv_path))[0] + '.zip')
    if epath.Path(paired).is_file():
      return paired
  return images


def check_images(location: str) -> None:
  if epath.Path(location).is_dir():
    return
  if not epath.Path(location).exists():
    raise IngestError(f'{location}: --images path does not exist')
  try:
    with epath.Path(location).open('rb') as f, zipfile.ZipFile(f) as zf:
      zf.infolist()
  except (zipfile.BadZipFile, OSError) as e:
    raise IngestError(f'{location}: not a readable zip file or directory ({e})') from None


# A grant's part: US[kind]<number>-<date>.ZIP (its XML and sheets) or, unpacked, its .XML beside the sheets.
_GRANT_PART = re.compile(r'US(D|PP|RE|H|T|)(\d+)-(\d{8})\.(ZIP|XML)', re.IGNORECASE)
GRANT_XML = re.compile(r'USD\d+-\d{8}\.XML', re.IGNORECASE)
ARCHIVE_NOT_READ = 'archive not named as a grant (not read)'  # counted, so a misplaced yearly zip is seen
GRANT_KINDS = {'d': 'design', '': 'utility', 'pp': 'plant', 're': 'reissue', 'h': 'statutory invention registration',
               't': 'defensive publication'}


@dataclasses.dataclass(frozen=True)
class Part:
  """Where one design grant's XML and sheets are: a ZIP file, a ZIP inside a tar (read at its offset,
  so a worker needs no index of the tar), or a folder holding the XML (``member``) beside the sheets."""
  kind: str       # 'zip' | 'tar' | 'folder'
  location: str   # the ZIP file, the tar, or the folder
  member: str = ''  # the tar member, or the XML's file name in the folder
  offset: int = 0
  size: int = 0

  @property
  def name(self) -> str:
    """Where it is, for the report."""
    return f'{self.location}:{self.member}' if self.kind == 'tar' else (
        os.path.join(self.location, self.member) if self.member else self.location)

  @property
  def patent_stem(self) -> str:
    """'USD0907292-20210105' from the part's file name."""
    return os.path.splitext(os.path.basename(self.member or self.location))[0]


def _grant_kind(name: str) -> str | None:
  """The kind of grant a file name holds ('design', 'utility', ...), None for any other file."""
  m = _GRANT_PART.fullmatch(os.path.basename(name))
  return GRANT_KINDS[m.group(1).lower()] if m else None


def _tar_parts(path: str):
  try:
    tar = tarfile.open(path, 'r:')  # uncompressed only: members are read at their offsets
  except tarfile.ReadError as e:
    raise IngestError(f'{path}: not an uncompressed tar ({e}); the weekly Red Book tars are plain tars') from None
  with tar:
    for info in tar:
      kind = _grant_kind(info.name) if info.isfile() else None
      if kind is not None and info.name.upper().endswith('.ZIP'):
        yield kind, Part('tar', path, info.name, info.offset_data, info.size) if kind == 'design' else None
      elif kind is not None:
        yield f'{kind}: unpacked inside a tar (not read)', None
      elif info.isfile() and info.name.lower().endswith(('.zip', '.tar')):
        yield ARCHIVE_NOT_READ, None


def _folder_parts(folder: str):
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      if name.lower().endswith('.tar'):
        yield from _tar_parts(path)
        continue
      kind = _grant_kind(name)
      if kind == 'design':
        yield kind, Part('zip', path) if name.upper().endswith('.ZIP') else Part('folder', root, name)
      elif kind is not None:
        yield kind, None
      elif name.lower().endswith('.zip'):
        yield ARCHIVE_NOT_READ, None


def _redbook_input(path: str) -> str:
  """'folder', 'zip' (one design grant) or 'tar'; IngestError for anything else."""
  if os.path.isdir(path):
    return 'folder'
  if os.path.isfile(path) and _grant_kind(path) == 'design' and path.upper().endswith('.ZIP'):
    return 'zip'
  if os.path.isfile(path) and tarfile.is_tarfile(path):
    return 'tar'
  raise IngestError(f'{path}: --redbook path is not a folder, a weekly tar or a USD<number>-<date>.ZIP'
                    + ('' if os.path.exists(path) else ' (it does not exist)'))


def check_redbook_inputs(paths: list[str]) -> None:
  """Refuse a path that is none of the Red Book inputs before any work is done."""
  for path in paths:
    _redbook_input(path)


def find_parts(paths: list[str]):
  """(kind of grant, Part or None) for every grant found under ``paths``, in a fixed order (paths as
  given, folders walked in sorted order, tars in member order); only design grants get a Part. Archives
  that are not grants, and grants a tar holds unpacked, are yielded too (counted, not read)."""
  for path in paths:
    kind = _redbook_input(path)
    if kind == 'folder':
      yield from _folder_parts(path)
    elif kind == 'zip':
      yield 'design', Part('zip', path)
    else:
      yield from _tar_parts(path)


def open_part(part: Part) -> ImageSource:
  """The part's files by name (its sheets, and its XML through ``part_xml``)."""
  if part.kind == 'tar':
    with open(part.location, 'rb') as f:
      f.seek(part.offset)
      return ImageSource(part.name, data=f.read(part.size))
  return ImageSource(part.location)


def part_xml(source: ImageSource, part: Part) -> bytes:
  """The grant XML of an opened part; FileNotFoundError if it has none."""
  return source.read(part.member) if part.kind == 'folder' else source.find(GRANT_XML)
