"""What travels between the ingestion stages: a row on its way in (RowItem), what decoding made of it
(RowResult)."""

from __future__ import annotations

import dataclasses

from designclip_jax.data.impact import PatentRow
from designclip_jax.data.ingest.sources import Part


@dataclasses.dataclass
class RowItem:
  """One input row (a CSV row, or a Red Book grant) on its way through ingestion: what a worker receives,
  never an open source."""
  key: int               # the record order on every path: csv index << 32 | row, or the grant's number
  source: str            # the CSV file, or where the grant's part is
  row: int               # 1-based: the CSV data row, or the grant's place among the Red Book grants
  patent_id: str
  patent: PatentRow | None  # None: rejected while reading
  issues: list[tuple[str, str]]  # (reason, action), in the order they were found
  images: str = ''       # the directory or zip to read a CSV row's drawings from
  part: Part | None = None  # a Red Book grant's part (its sheets)
  split: str | None = None  # where its record goes (None: the row is skipped)
  family: str = ''       # its family id (its own id when the input gives no family)
  block: int = 0


@dataclasses.dataclass
class RowResult:
  key: int
  source: str
  row: int
  patent_id: str
  issues: list[tuple[str, str]]
  split: str | None = None  # None: no record (skipped)
  example: dict | None = None  # the TFDS example (images as PNG bytes)
  serialized: bytes | None = None
  mapping: str | None = None
  image_hashes: list[str] = dataclasses.field(default_factory=list)  # of the PNGs, for the leakage count
  block: int = 0
