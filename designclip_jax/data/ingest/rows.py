"""What travels between the ingestion stages: a row on its way in (RowItem), what decoding made of it
(RowResult), and the one error type of ingestion."""

from __future__ import annotations

import dataclasses

from designclip_jax.data.impact import PatentRow


class IngestError(Exception):
  """Bad input or a failed write: a one-line message that names the file. A re-run resumes."""


@dataclasses.dataclass
class RowItem:
  """One input row on its way through ingestion (what a worker receives: no image source)."""
  key: int               # csv index << 32 | row: the record order on both paths
  csv_file: str
  row: int
  patent_id: str
  patent: PatentRow | None  # None: rejected while parsing
  issues: list[tuple[str, str]]  # (reason, action), in the order they were found
  images: str            # the directory or zip to read this row's drawings from
  block: int = 0


@dataclasses.dataclass
class RowResult:
  key: int
  csv_file: str
  row: int
  patent_id: str
  issues: list[tuple[str, str]]
  split: str | None = None  # None: no record (skipped)
  example: dict | None = None  # the TFDS example (images as PNG bytes)
  serialized: bytes | None = None
  mapping: str | None = None
  block: int = 0
