"""Paths that may be bucket URLs (gs://…), for libraries that read or write local files only (transformers'
config and tokenizer loaders, safetensors' memory map, torch.load): copies through etils.epath."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterable, Iterator

from etils import epath


def is_url(path) -> bool:
  return '://' in os.fspath(path)


def absolute(path) -> str:
  """A local path made absolute; a URL as given (os.path.abspath would turn gs://bucket/x into ./gs:/bucket/x)."""
  return os.fspath(path) if is_url(path) else os.path.abspath(path)


@contextlib.contextmanager
def local_folder(folder, names: Iterable[str]) -> Iterator[str]:
  """``folder`` itself when it is local; for a URL, a temporary local folder holding those of ``names`` that
  the URL's folder has (deleted on exit). Only the named files travel: a checkpoint's folder may also hold
  gigabytes of weights in formats nobody reads."""
  if not is_url(folder):
    yield os.fspath(folder)
    return
  with tempfile.TemporaryDirectory(prefix='designclip-copy-') as local:
    for name in dict.fromkeys(names):
      source = epath.Path(folder) / name
      if source.is_file():
        source.copy(epath.Path(local) / name)
    yield local


def upload_folder(local: str, folder) -> None:
  """Every file of the local folder ``local`` into ``folder`` (local or a URL), replacing files of the same name."""
  destination = epath.Path(folder)
  destination.mkdir(parents=True, exist_ok=True)
  for name in sorted(os.listdir(local)):
    epath.Path(local, name).copy(destination / name, overwrite=True)
