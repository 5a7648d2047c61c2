"""Which split a patent's record goes to, and what still leaks across splits.

Three rules: published split lists (``--split-file split=PATH``, one patent id per line) when given;
else, where grant XML gives families, a hash of the family id, so a family never straddles splits;
else (a CSV without XML) a hash of the patent id. A family is a connected group of patents that share
an application (its own, or one named in ``us-related-documents``: continuations, divisions, CIPs) or a
claimed priority document; its id is its earliest-dated such document (ties: the smaller number), e.g.
``US14037863``. The report counts what leaks whatever the rule: families with records in several
splits, and identical drawings (by hash of the stored PNG) in several splits.
"""

from __future__ import annotations

import array
import hashlib
from typing import Callable, Iterable

import numpy as np

from designclip_jax.data.ingest.errors import IngestError
from designclip_jax.data.ingest.sources import open_text
from designclip_jax.data.layout import SPLITS
from designclip_jax.data.redbook import patent_number

ID_RULE = 'patent id hash (no family information: CSV without grant XML)'
FAMILY_RULE = 'family id hash (families from grant XML: related US applications and claimed priorities)'
LIST_RULE = 'published split lists (--split-file)'


def split_of(key: str, fractions=(0.8, 0.1, 0.1)) -> str:
  """Deterministic split by a patent or family id, independent of row order and of the other patents."""
  u = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16 ** 12
  return 'train' if u < fractions[0] else 'validation' if u < fractions[0] + fractions[1] else 'test'


def read_split_lists(split_files: dict[str, str]) -> dict[str, str]:
  """{patent id: split} from {split: file of ids, one per line}; a patent in two lists is refused."""
  splits = {}
  for split, path in split_files.items():
    if split not in SPLITS:
      raise IngestError(f'{path}: --split-file names split {split!r}; splits are {list(SPLITS)}')
    try:
      with open_text(path) as f:  # local or gs://
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
    except OSError as e:
      raise IngestError(f'{path}: cannot read the split list ({e.strerror or e})') from None
    for n, text in lines:
      pid = patent_number(text)
      if not pid:
        raise IngestError(f'{path} line {n}: {text!r} is not a design patent id (e.g. D0907292)')
      if splits.setdefault(pid, split) != split:
        raise IngestError(f'{path} line {n}: {pid} is also in the {splits[pid]} list')
  return splits


def _hash64(text: str) -> int:
  return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), 'little', signed=True)


def family_ids(patent_nodes: Callable[[], Iterable[list[tuple[str, str]]]]) -> list[str]:
  """The family id of each patent, given ``patent_nodes()``: per patent, its (document, 'YYYY-MM-DD' or '')
  nodes (application, related applications, claimed priorities). Memory: three ints per node occurrence,
  strings only for the families' roots (``patent_nodes`` is read twice)."""
  from scipy.sparse import coo_matrix  # pylint: disable=import-outside-toplevel
  from scipy.sparse.csgraph import connected_components  # pylint: disable=import-outside-toplevel
  patent, node, date = array.array('q'), array.array('q'), array.array('q')
  n = 0
  for nodes in patent_nodes():
    for doc, day in nodes:
      if doc:
        patent.append(n)
        node.append(_hash64(doc))
        date.append(int(day.replace('-', '')) if day else 99999999)
    n += 1
  patent, node, date = (np.frombuffer(a, np.int64) for a in (patent, node, date))
  unique, node_index = np.unique(node, return_inverse=True)
  size = n + len(unique)
  graph = coo_matrix((np.ones(len(patent)), (patent, n + node_index)), shape=(size, size))
  _, component = connected_components(graph, directed=False)
  # each family's root: its earliest-dated node (ties: the smaller hash; one string per hash below)
  occurrence_family = component[n + node_index]
  order = np.lexsort((node, date, occurrence_family))
  first = np.ones(len(order), bool)
  first[1:] = occurrence_family[order][1:] != occurrence_family[order][:-1]
  root_of_family = dict(zip(occurrence_family[order][first].tolist(), node[order][first].tolist()))
  wanted, names = set(root_of_family.values()), {}
  for nodes in patent_nodes():
    for doc, _ in nodes:
      if doc and _hash64(doc) in wanted:
        names.setdefault(_hash64(doc), doc)
  return [names.get(root_of_family.get(f), '') for f in component[:n].tolist()]  # '': a patent with no node


def _several_splits(keys: array.array, bits: array.array) -> tuple[int, int]:
  """(keys seen in more than one split, occurrences of those keys)."""
  keys, bits = np.frombuffer(keys, np.int64), np.frombuffer(bits, np.int64)
  unique, index = np.unique(keys, return_inverse=True)
  seen = np.zeros(len(unique), np.int64)
  np.bitwise_or.at(seen, index, bits)
  several = (seen & (seen - 1)) != 0  # more than one split bit set
  return int(several.sum()), int(several[index].sum())


def leakage(records: Iterable[tuple[str, str, list[str]]]) -> dict:
  """What crosses splits, from (split, family id, drawing hashes) per record: families with records in
  several splits, and identical drawings (same PNG bytes) in several splits."""
  split_bit = {s: 1 << i for i, s in enumerate(SPLITS)}
  family, family_bits, drawing, drawing_bits = (array.array('q') for _ in range(4))
  for split, family_id, hashes in records:
    family.append(_hash64(family_id))
    family_bits.append(split_bit[split])
    drawing.extend(int(h, 16) - (1 << 63) for h in hashes)  # 64-bit hex -> signed int64
    drawing_bits.extend([split_bit[split]] * len(hashes))
  families, family_records = _several_splits(family, family_bits)
  drawings, drawing_copies = _several_splits(drawing, drawing_bits)
  return {'families_in_several_splits': families, 'records_of_those_families': family_records,
          'drawings_in_several_splits': drawings, 'copies_of_those_drawings': drawing_copies}
