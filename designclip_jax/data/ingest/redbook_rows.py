"""The Red Book reader: design grants (weekly tars, folders of ZIPs, per-patent folders) -> RowItems, the
same row records the CSV reader makes, and ``patents.jsonl``.

Two passes, both resumable by block of ``rows_per_shard`` grants. The scan reads every grant's XML (no
drawings) in worker processes and keeps its fields in ``scan-<block>.json`` files; families can then be
formed over the whole input (a family's members may sit in different weekly tars) and every grant's
split decided before any record is written. The second pass turns each scanned grant into a RowItem for
the decoding stage. A repeated patent id keeps its first grant; utility, plant and reissue grants are
counted and skipped; an XML that does not parse, or a grant without sheets, is a report row.

Caption: the IMPACT CSV's where ``--csv`` has a row for the patent (not empty), else built from the
grant (``redbook.caption_from_grant``: the claim, then the views its figures name).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import zipfile

import numpy as np

from designclip_jax.data.impact import RowError, patent_row
from designclip_jax.data.ingest.captions import CaptionTable
from designclip_jax.data.ingest.csv_rows import duplicate_issue
from designclip_jax.data.ingest.errors import worker_died
from designclip_jax.data.ingest.rows import RowItem
from designclip_jax.data.ingest.sources import Part, find_parts, open_part, part_xml
from designclip_jax.data.ingest.splits import family_ids, split_of
from designclip_jax.data.ingest.writer import atomic_json, read_json
from designclip_jax.data.parallel import WorkerDied, ordered_map
from designclip_jax.data.redbook import Grant, GrantError, caption_from_grant, parse_grant, patent_number

PARTS_FILE = 'parts.json'  # written when the scan has seen every part: counts by kind of grant


def scan_grant(numbered: tuple[int, Part]) -> dict:
  """Worker, first pass: one part -> its grant's fields (the XML only; no drawing is read)."""
  seq, part = numbered
  scanned = {'seq': seq, 'part': dataclasses.asdict(part), 'patent_id': patent_number(part.patent_stem[2:].split('-')[0]),
             'grant': None, 'issues': []}
  try:
    source = open_part(part)
    try:
      grant = parse_grant(part_xml(source, part))
    finally:
      source.close()
  except FileNotFoundError:
    scanned['issues'].append(['no grant XML (USD<number>-<date>.XML) in the part', 'skipped'])
  except (zipfile.BadZipFile, OSError) as e:
    scanned['issues'].append([f'unreadable part: {e.__class__.__name__}: {e}', 'skipped'])
  except GrantError as e:
    scanned['issues'].append([str(e), 'skipped'])
  else:
    scanned.update(patent_id=grant.patent_id, grant=dataclasses.asdict(grant))
    scanned['issues'] += [[note, 'noted'] for note in grant.notes]
  return scanned


def _scan_files(work: str) -> list[str]:
  return sorted(f for f in os.listdir(work) if re.fullmatch(r'scan-\d{6}\.json', f))


def scan(paths: list[str], work: str, rows_per_shard: int, workers: int, progress: bool) -> dict:
  """First pass (skips the blocks a killed run finished); returns the count of grants found by kind."""
  parts_file = os.path.join(work, PARTS_FILE)
  if os.path.exists(parts_file):
    return read_json(parts_file)
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  done = {int(f[5:11]) for f in _scan_files(work)}
  kinds = collections.Counter()

  def design_parts():
    for kind, part in find_parts(paths):
      kinds[kind] += 1
      if part is not None:
        yield kinds['design'] - 1, part

  todo = (numbered for numbered in design_parts() if numbered[0] // rows_per_shard not in done)
  block, scanned = None, []
  try:
    for result in tqdm(ordered_map(scan_grant, todo, workers), disable=not progress, desc='scan grants',
                       unit='grant'):
      if block is not None and result['seq'] // rows_per_shard != block:
        atomic_json(os.path.join(work, f'scan-{block:06d}.json'), scanned)
        scanned = []
      block = result['seq'] // rows_per_shard
      scanned.append(result)
  except WorkerDied as e:
    seq, part = e.item
    raise worker_died(seq // rows_per_shard, f'scanning {part.name}') from None
  if scanned:
    atomic_json(os.path.join(work, f'scan-{block:06d}.json'), scanned)
  atomic_json(parts_file, dict(kinds))
  return dict(kinds)


def scanned_grants(work: str):
  """Every scanned part, in input order."""
  for name in _scan_files(work):
    yield from read_json(os.path.join(work, name))


@dataclasses.dataclass
class Plan:
  """Per scanned part (in order): whether it is the first of its id, its family and split."""
  first_of: list[tuple[str, int] | None]  # for a repeated id: (where, row) of its first grant
  accepted: np.ndarray  # bool: a parsed grant, first of its id
  family: list[str]     # '' where not accepted
  split: list[str | None]


def plan(work: str, split_lists: dict[str, str] | None) -> Plan:
  """Families over every accepted grant, then splits: the published lists' where given, else by family."""
  seen, first_of, accepted, listed = {}, [], [], []
  for s in scanned_grants(work):
    first = seen.setdefault(s['patent_id'], (Part(**s['part']).name, s['seq'] + 1)) if s['grant'] else None
    repeated = first is not None and first[1] != s['seq'] + 1
    first_of.append(first if repeated else None)
    accepted.append(s['grant'] is not None and not repeated)
    if split_lists is not None:
      listed.append(split_lists.get(s['patent_id']))
  accepted = np.array(accepted, bool)
  nodes = lambda: (Grant(**s['grant']).family_nodes() for s in scanned_grants(work) if accepted[s['seq']])
  families = iter(family_ids(nodes))
  family, split = [], []
  for s in scanned_grants(work):
    ok = accepted[s['seq']]
    family.append((next(families) or s['patent_id']) if ok else '')  # no node at all: its own family
    split.append(None if not ok else listed[s['seq']] if split_lists is not None else split_of(family[-1]))
  return Plan(first_of, accepted, family, split)


def redbook_rows(work: str, the_plan: Plan, captions: CaptionTable | None, rows_per_shard: int):
  """Second pass: every scanned part as a RowItem, in input order, with its block."""
  for s in scanned_grants(work):
    seq, part = s['seq'], Part(**s['part'])
    item = RowItem(seq, part.name, seq + 1, s['patent_id'], None, [tuple(i) for i in s['issues']], part=part,
                   block=seq // rows_per_shard)
    if the_plan.first_of[seq] is not None:
      item.issues = [duplicate_issue(*the_plan.first_of[seq])]
    elif the_plan.accepted[seq]:
      grant = s['grant']
      caption = (captions.get(grant['patent_id']) if captions else None) or caption_from_grant(
          grant['title'], grant['claim'], grant['fig_desc'])
      try:
        item.patent = patent_row(grant['patent_id'], grant['title'], grant['claim'], caption,
                                 grant['uspc'][0] if grant['uspc'] else '', grant['image_files'], grant['fig_desc'],
                                 grant['no_figs'], grant['locarno'])
      except RowError as e:
        item.issues.append((str(e), 'skipped'))
      else:
        item.issues += [(r, 'repaired') for r in item.patent.repairs]
        item.family, item.split = the_plan.family[seq], the_plan.split[seq]
        if item.split is None:
          item.issues.append(('not in any --split-file list', 'skipped'))
    yield item


def write_patents(out_path: str, work: str, the_plan: Plan, captions: CaptionTable | None) -> dict:
  """``patents.jsonl`` (one object per accepted grant, in input order); returns counts for the report."""
  versions, categories, caption_sources = collections.Counter(), collections.Counter(), collections.Counter()
  with_csv_row = 0
  with open(out_path + '.tmp', 'w') as f:
    for s in scanned_grants(work):
      if not the_plan.accepted[s['seq']]:
        continue
      grant = s['grant']
      versions[grant['dtd_version']] += 1
      categories.update(grant['citation_counts'])
      impact = captions.get(grant['patent_id']) if captions else None
      with_csv_row += impact is not None
      caption_sources['impact_csv' if impact else 'built_from_grant_xml'] += 1
      line = Grant(**grant).json(the_plan.family[s['seq']])
      f.write(json.dumps(line) + '\n')
  os.replace(out_path + '.tmp', out_path)
  return {'xml_versions': dict(versions), 'citations_by_category': dict(categories),
          'captions': dict(caption_sources), 'grants_with_an_impact_csv_row': with_csv_row}
