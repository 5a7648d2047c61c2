"""IMPACT captions for Red Book grants: the CSVs' (id, caption) pairs in an SQLite table in the work
directory, so looking a grant's caption up costs no memory per CSV row."""

from __future__ import annotations

import csv
import os
import sqlite3
import sys

from designclip_jax.data.redbook import patent_number


class CaptionTable:
  """id -> IMPACT caption; the first row of a repeated id wins, as in the CSV reader."""

  def __init__(self, path: str):
    self.db = sqlite3.connect(path)

  @classmethod
  def build(cls, csv_paths: list[str], path: str) -> CaptionTable:
    """The table at ``path``, built from ``csv_paths`` unless a finished one is there (a rerun reuses it)."""
    if not os.path.exists(path):
      tmp = path + '.tmp'
      if os.path.exists(tmp):
        os.remove(tmp)
      db = sqlite3.connect(tmp)
      db.execute('CREATE TABLE caption (id TEXT PRIMARY KEY, caption TEXT)')
      csv.field_size_limit(sys.maxsize)
      for csv_path in csv_paths:
        with open(csv_path, newline='', encoding='utf-8') as f:
          rows = ((patent_number(r.get('id') or '') or (r.get('id') or '').strip(), (r.get('caption') or '').strip())
                  for r in csv.DictReader(f))
          db.executemany('INSERT OR IGNORE INTO caption VALUES (?, ?)', rows)
      db.commit()
      db.close()
      os.replace(tmp, path)
    return cls(path)

  def get(self, patent_id: str) -> str | None:
    """The patent's IMPACT caption ('' if empty); None when no CSV row has the patent."""
    row = self.db.execute('SELECT caption FROM caption WHERE id = ?', (patent_id,)).fetchone()
    return row[0] if row else None

  def __len__(self) -> int:
    return self.db.execute('SELECT COUNT(*) FROM caption').fetchone()[0]

  def close(self) -> None:
    self.db.close()
