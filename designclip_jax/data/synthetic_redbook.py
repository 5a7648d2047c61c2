"""Synthetic design patents in the USPTO Red Book layout: weekly ``I<YYYYMMDD>.tar`` holding
``I<YYYYMMDD>/DESIGN/USD<number>-<YYYYMMDD>.ZIP``, each ZIP a folder ``USD<number>-<YYYYMMDD>/`` with
the grant XML (``us-patent-grant-v45-2014-04-03.dtd``, written element for element as the real
files write them) and the TIFF sheets ``...-D00000.TIF`` (front-page drawing), ``-D00001.TIF``, ...

Each week's tar also holds one utility, one plant and one reissue grant (``UTIL<nnnn>/``,
``PLANT/``, ``REISSUE/``, XML only), as the bulk files mix every kind, so a reader's skipping is
exercised. ``OUT/synthetic.csv`` gives the same design patents as IMPACT rows (caption,
``class_search[0]`` = Locarno), so a Red Book ingest can be run with and without ``--csv``.

Dates, numbers, families, priorities and citations follow the invented model of
``synthetic_collection`` (read its docstring: real numbers need real data). A continuation draws
the object of its family's first patent with its own views and broken lines. Same arguments ->
byte-identical files (fixed member order, times and modes; any worker count); patents stream
through a bounded window, so memory stays flat in their number.

    python -m designclip_jax.data.synthetic --layout redbook --out /tmp/redbook --patents 500 --seed 0
"""

from __future__ import annotations

import calendar
import csv
import datetime
import io
import os
import re
import tarfile
import zipfile
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image

from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.data.impact import IMPACT_COLUMNS
from designclip_jax.data.parallel import ordered_map
from designclip_jax.data.synthetic_articles import caption
from designclip_jax.data.synthetic_collection import Collection
from designclip_jax.data.synthetic_drawing import Sheets, draw_sheets, pick_dashed, sample_object
from designclip_jax.data.synthetic_records import Patent, Reference, Relation

DTD = 'us-patent-grant-v45-2014-04-03.dtd'
DPI = 300  # the real sheets' resolution: he/wi in mm = pixels / 300 * 25.4
AGENT = 'Lowe Marsh & Whitcombe LLP'
_FIG = re.compile(r'^(FIG\. \d+)(.*)$')


def _leaf(tag: str, text: str, attrs: dict[str, str] | None = None) -> str:
  return f'<{tag}{_attributes(attrs)}>{escape(text)}</{tag}>'


def _node(tag: str, children: list[str], attrs: dict[str, str] | None = None) -> str:
  return '\n'.join([f'<{tag}{_attributes(attrs)}>', *children, f'</{tag}>'])


def _attributes(attrs: dict[str, str] | None) -> str:
  return ''.join(f' {k}={quoteattr(v)}' for k, v in (attrs or {}).items())


def _document_id(country: str, number: str, kind: str = '', name: str = '', date: str = '') -> str:
  fields = [_leaf('country', country), _leaf('doc-number', number)]
  fields += [_leaf('kind', kind)] if kind else []
  fields += [_leaf('name', name)] if name else []
  fields += [_leaf('date', date)] if date else []
  return _node('document-id', fields)


def _head(stem: str, grant_date: str) -> str:
  produced = (datetime.datetime.strptime(grant_date, '%Y%m%d') - datetime.timedelta(days=15)).strftime('%Y%m%d')
  return (f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE us-patent-grant SYSTEM "{DTD}" [ ]>\n'
          f'<us-patent-grant lang="EN" dtd-version="v4.5 2014-04-03" file="{stem}.XML" status="PRODUCTION" '
          f'id="us-patent-grant" country="US" date-produced="{produced}" date-publ="{grant_date}">')


def _citation(num: int, ref: Reference) -> str:
  if ref.text:
    cited = _node('nplcit', [_leaf('othercit', ref.text)], {'num': f'{num:05d}'})
  else:
    cited = _node('patcit', [_document_id(ref.country, ref.doc_number, ref.kind, ref.name, ref.date)],
                  {'num': f'{num:05d}'})
  lines = [cited, _leaf('category', ref.category)]
  if ref.uspc:  # on one line, as the real files write it
    lines.append(f'<classification-national><country>US</country><main-classification>{ref.uspc}'
                 f'</main-classification></classification-national>')
  return _node('us-citation', lines)


def _relation(rel: Relation) -> str:
  parent = [_document_id('US', rel.parent_application, date=rel.parent_filing)]
  if rel.parent_status:
    parent.append(_leaf('parent-status', rel.parent_status))
  if rel.parent_patent:
    parent.append(_node('parent-grant-document', [_document_id('US', rel.parent_patent, date=rel.parent_grant)]))
  return _node(rel.kind, [_node('relation', [_node('parent-doc', parent),
                                              _node('child-doc', [_document_id('US', rel.child_application)])])])


def _address(person) -> str:
  return _node('address', [_leaf('city', person.city)] + ([_leaf('state', person.state)] if person.state else [])
               + [_leaf('country', person.country)])


def _named(person) -> str:
  return _node('addressbook', [_leaf('last-name', person.last), _leaf('first-name', person.first), _address(person)])


def _parties(p: Patent) -> list[str]:
  home = p.inventors[0]
  if p.applicant:
    applicants = [_node('us-applicant', [
        _node('addressbook', [_leaf('orgname', p.applicant), _address(home)]),
        _node('residence', [_leaf('country', home.country)])],
        {'sequence': '001', 'app-type': 'applicant', 'designation': 'us-only',
         'applicant-authority-category': 'assignee'})]
  else:
    applicants = [_node('us-applicant', [_named(person), _node('residence', [_leaf('country', person.country)])],
                        {'sequence': f'{i:03d}', 'app-type': 'applicant', 'designation': 'us-only',
                         'applicant-authority-category': 'inventor'}) for i, person in enumerate(p.inventors, 1)]
  inventors = [_node('inventor', [_named(person)], {'sequence': f'{i:03d}', 'designation': 'us-only'})
               for i, person in enumerate(p.inventors, 1)]
  agent = _node('agent', [_node('addressbook', [_leaf('orgname', AGENT), _node('address', [_leaf('country', 'unknown')])])],
                {'sequence': '01', 'rep-type': 'attorney'})
  parties = [_node('us-parties', [_node('us-applicants', applicants), _node('inventors', inventors),
                                  _node('agents', [agent])])]
  if p.applicant:
    parties.append(_node('assignees', [_node('assignee', [_node('addressbook', [
        _leaf('orgname', p.applicant), _leaf('role', '02' if home.country == 'US' else '03'), _address(home)])])]))
  return parties


def _examiners(p: Patent) -> str:
  primary, *assistant = p.examiners
  people = [_node('primary-examiner', [_leaf('last-name', primary.last), _leaf('first-name', primary.first),
                                       _leaf('department', p.department)])]
  people += [_node('assistant-examiner', [_leaf('last-name', a.last), _leaf('first-name', a.first)]) for a in assistant]
  return _node('examiners', people)


def _drawings(sheets: Sheets) -> str:
  figures = []
  for i, (name, tiff) in enumerate(sheets.files.items()):
    width, height = Image.open(io.BytesIO(tiff)).size
    figures.append(_node('figure', [
        f'<img id="EMI-D{i:05d}" he="{height / DPI * 25.4:.2f}mm" wi="{width / DPI * 25.4:.2f}mm" file="{name}" '
        f'alt="embedded image" img-content="drawing" img-format="tif"/>'], {'id': f'Fig-EMI-D{i:05d}', 'num': f'{i:05d}'}))
  return _node('drawings', figures, {'id': 'DRAWINGS'})


def _description(p: Patent, sheets: Sheets, broken_lines: bool) -> str:
  paragraphs = []
  for text in sheets.fig_desc:
    fig, rest = _FIG.match(text).groups()
    paragraphs.append(f'<figref idref="DRAWINGS">{fig}</figref>{escape(rest)}')
  if broken_lines:
    paragraphs.append(f'The broken lines depict portions of the {escape(p.noun)} that form no part of the claimed design.')
  body = [f'<p id="p-{i:04d}" num="{i:04d}">{text}</p>' for i, text in enumerate(paragraphs, start=1)]
  return _node('description', [
      '<?brief-description-of-drawings description="Brief Description of Drawings" end="lead"?>',
      _node('description-of-drawings', body),
      '<?brief-description-of-drawings description="Brief Description of Drawings" end="tail"?>'],
      {'id': 'description'})


def grant_xml(p: Patent, sheets: Sheets, broken_lines: bool) -> bytes:
  """The grant XML of one design patent, laid out as the USPTO's v4.5 files are."""
  stem = f'US{p.number}-{p.grant_date}'
  bib = [_node('publication-reference', [_document_id('US', p.number, 'S1', date=p.grant_date)]),
         _node('application-reference', [_document_id('US', p.application, date=p.filing_date)], {'appl-type': 'design'}),
         _leaf('us-application-series-code', '29')]
  if p.priority:
    bib.append(_node('priority-claims', [
        _node('priority-claim', [_leaf('country', country), _leaf('doc-number', number), _leaf('date', date)],
              {'sequence': f'{i:02d}', 'kind': kind}) for i, (kind, country, number, date) in enumerate(p.priority, 1)]))
  # designs filed from 2015-05-13 on get 15 years, earlier ones 14
  bib.append(_node('us-term-of-grant', [_leaf('length-of-grant', '15' if p.filing_date >= '20150513' else '14')]))
  bib.append(_node('classification-locarno', [_leaf('edition', p.locarno_edition),
                                              _leaf('main-classification', p.locarno)]))
  bib.append(_node('classification-national', [_leaf('country', 'US'), _leaf('main-classification', p.uspc[0])]
                   + [_leaf('further-classification', c) for c in p.uspc[1:]]))
  bib.append(_leaf('invention-title', p.noun.capitalize(), {'id': 'd2e71' if p.priority else 'd2e53'}))
  bib.append(_node('us-references-cited', [_citation(i, ref) for i, ref in enumerate(p.references, start=1)]))
  bib += [_leaf('number-of-claims', '1'), _leaf('us-exemplary-claim', '1')]
  bib.append(_node('us-field-of-classification-search', [_node('classification-national', [
      _leaf('country', 'US'), _leaf('main-classification', p.uspc[0]), _leaf('additional-info', 'unstructured')])]))
  bib.append(_node('figures', [_leaf('number-of-drawing-sheets', str(len(sheets.sheet_figures))),
                               _leaf('number-of-figures', str(len(sheets.fig_desc)))]))
  if p.relations:
    bib.append(_node('us-related-documents', [_relation(rel) for rel in p.relations]))
  bib += _parties(p)
  bib.append(_examiners(p))
  claim = _node('claim', [_leaf('claim-text', f'The ornamental design for a {p.noun}, as shown and described.')],
                {'id': 'CLM-00001', 'num': '00001'})
  return '\n'.join([_head(stem, p.grant_date), _node('us-bibliographic-data-grant', bib), _drawings(sheets),
                    _description(p, sheets, broken_lines), _leaf('us-claim-statement', 'CLAIM'),
                    _node('claims', [claim], {'id': 'claims'}), '</us-patent-grant>', '']).encode()


def _other_grant_xml(number: str, kind: str, appl_type: str, application: str, grant_date: str, title: str) -> bytes:
  """A minimal utility, plant or reissue grant: the members a design reader skips."""
  bib = [_node('publication-reference', [_document_id('US', number, kind, date=grant_date)]),
         _node('application-reference', [_document_id('US', application, date=grant_date)], {'appl-type': appl_type}),
         _leaf('invention-title', title, {'id': 'd2e53'})]
  return '\n'.join([_head(f'US{number}-{grant_date}', grant_date), _node('us-bibliographic-data-grant', bib),
                    '</us-patent-grant>', '']).encode()


def impact_row(p: Patent, sheets: Sheets, description: str) -> dict[str, str]:
  """The patent as an IMPACT CSV row: ``class`` main + further, ``class_search`` [Locarno, main USPC,
  the USPC classes of the examiner's citations], as IMPACT's rows have them."""
  cited = [ref.uspc for ref in p.references if ref.uspc]
  return {'title': p.noun.capitalize(), 'id': p.number,
          'claim': f'The ornamental design for a {p.noun}, as shown and described.', 'date': p.grant_date,
          'class': ','.join(p.uspc), 'class_search': repr([p.locarno, p.uspc[0], *cited]),
          'inv_country': ','.join(person.country for person in p.inventors), 'no_figs': str(len(sheets.fig_desc)),
          'sheets': str(len(sheets.sheet_figures)), 'file_names': repr(list(sheets.files)),
          'fig_desc': repr(sheets.fig_desc), 'caption': description}


def _zip(folder: str, files: dict[str, bytes], day: datetime.date) -> bytes:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w') as archive:
    for name, data in files.items():
      info = zipfile.ZipInfo(f'{folder}/{name}', date_time=(day.year, day.month, day.day, 0, 0, 0))
      info.compress_type, info.create_system, info.external_attr = zipfile.ZIP_DEFLATED, 3, 0o644 << 16
      archive.writestr(info, data)
  return buf.getvalue()


_COLLECTION: Collection | None = None


def _load_collection(n_patents: int, seed: int, weeks: int) -> None:
  global _COLLECTION  # pylint: disable=global-statement  # one per worker process, rebuilt from its arguments
  _COLLECTION = Collection(n_patents, seed, weeks)


def _render(k: int) -> tuple[str, bytes, dict[str, str]]:
  """Patent k's ZIP (name, bytes) and IMPACT row."""
  c = _COLLECTION
  p = c.patent(k)
  label = CLASS_CODES.index(p.code)
  parts = sample_object(label, np.random.default_rng([c.seed, 104, p.design_root]))
  rng = np.random.default_rng([c.seed, 105, k])
  dashed = pick_dashed(parts, rng)
  stem = f'US{p.number}-{p.grant_date}'
  sheets = draw_sheets(parts, dashed, p.noun, stem, rng)
  files = {f'{stem}.XML': grant_xml(p, sheets, dashed >= 0), **sheets.files}
  day = datetime.datetime.strptime(p.grant_date, '%Y%m%d').date()
  return f'{stem}.ZIP', _zip(stem, files, day), impact_row(p, sheets, caption(p.noun, parts, p.code))


class _WeeklyTar:
  """One weekly issue, written member by member (directories before their files, fixed metadata)."""

  def __init__(self, out: str, grant_date: str, week: int):
    self.grant_date, self.week = grant_date, week
    self.path = os.path.join(out, f'I{grant_date}.tar')
    self._tar = tarfile.open(self.path + '.tmp', 'w', format=tarfile.USTAR_FORMAT)
    self._mtime = calendar.timegm(datetime.datetime.strptime(grant_date, '%Y%m%d').timetuple())
    self._folders: set[str] = set()

  def _info(self, name: str, size: int = 0, folder: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, self._mtime, 0o755 if folder else 0o644
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    return info

  def add(self, folder: str, name: str, data: bytes) -> None:
    path = f'I{self.grant_date}/{folder}'
    for i, _ in enumerate(path.split('/')):
      parent = '/'.join(path.split('/')[:i + 1])
      if parent not in self._folders:
        self._folders.add(parent)
        self._tar.addfile(self._info(parent, folder=True))
    self._tar.addfile(self._info(f'{path}/{name}', len(data)), io.BytesIO(data))

  def close(self) -> None:
    """Add the week's utility, plant and reissue grants and move the tar into place."""
    day = datetime.datetime.strptime(self.grant_date, '%Y%m%d').date()
    others = ((f'UTIL{1100 + self.week:04d}', f'{11_000_000 + 7000 * self.week:08d}', 'B2', 'utility', 'Hinge assembly'),
              ('PLANT', f'PP{34_000 + 20 * self.week:06d}', 'P3', 'plant', 'Rose plant'),
              ('REISSUE', f'RE{49_000 + 10 * self.week:06d}', 'E1', 'reissue', 'Fastening device'))
    for i, (folder, number, kind, appl_type, title) in enumerate(others):
      stem = f'US{number}-{self.grant_date}'
      xml = _other_grant_xml(number, kind, appl_type, str(16_000_000 + 3 * self.week + i), self.grant_date, title)
      self.add(folder, f'{stem}.ZIP', _zip(stem, {f'{stem}.XML': xml}, day))
    self._tar.close()
    os.replace(self.path + '.tmp', self.path)


def generate(out: str, n_patents: int, seed: int = 0, weeks: int | None = None, workers: int | None = None,
             progress: bool = True) -> list[str]:
  """Write the weekly tars and ``synthetic.csv`` under ``out``; return the tar paths."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  collection = Collection(n_patents, seed, weeks)  # checks the arguments before anything is written
  os.makedirs(out, exist_ok=True)
  workers = workers or min(4, os.cpu_count() or 1)
  rendered = ordered_map(_render, range(n_patents), workers, initializer=_load_collection,
                         initargs=(n_patents, seed, collection.weeks))
  csv_path, tars, week = os.path.join(out, 'synthetic.csv'), [], None
  with open(csv_path + '.tmp', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=IMPACT_COLUMNS)
    writer.writeheader()
    for k, (name, data, row) in enumerate(tqdm(rendered, total=n_patents, disable=not progress,
                                               desc='synthetic Red Book patents', unit='patent')):
      if week is None or week.week != collection.week[k]:
        if week is not None:
          week.close()
        week = _WeeklyTar(out, row['date'], int(collection.week[k]))
        tars.append(week.path)
      week.add('DESIGN', name, data)
      writer.writerow(row)
    week.close()
  os.replace(csv_path + '.tmp', csv_path)
  return tars
