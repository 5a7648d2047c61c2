"""Which split a patent's record goes to."""

from __future__ import annotations

import hashlib


def split_of(patent_id: str, fractions=(0.8, 0.1, 0.1)) -> str:
  """Deterministic split by patent id, independent of row order and of the other patents."""
  u = int(hashlib.sha256(patent_id.encode()).hexdigest()[:12], 16) / 16 ** 12
  return 'train' if u < fractions[0] else 'validation' if u < fractions[0] + fractions[1] else 'test'
