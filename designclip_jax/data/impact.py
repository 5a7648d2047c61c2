"""The row record every reader produces (``PatentRow``, built by ``patent_row``: design class, figure
views, sheet mapping), and IMPACT CSV rows parsed into it (Python-list fields, class_search's Locarno).

Pure functions of strings; every rejection raises ``RowError`` with a reason that the ingestion
report prints next to the CSV file and row number.
"""

from __future__ import annotations

import ast
import dataclasses
import re

from designclip_jax.data.classes import CLASS_CODES, CLASS_NAMES, class_index, locarno_code

# 'side' is a side view that does not say which side ('FIG. 2 is a side view thereof').
VIEWS: tuple[str, ...] = ('front', 'rear', 'left', 'right', 'side', 'top', 'bottom', 'perspective', 'unknown')
UNKNOWN_VIEW = VIEWS.index('unknown')
IMPACT_COLUMNS = ('title', 'id', 'claim', 'date', 'class', 'class_search', 'inv_country', 'no_figs', 'sheets',
                  'file_names', 'fig_desc', 'caption')


class RowError(ValueError):
  """A row that cannot be ingested; the message is the reason shown in the report."""


def parse_list(text: str, field: str) -> list[str]:
  """A Python-list-of-strings field, read with ast.literal_eval (never eval)."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise RowError(f'malformed list in {field}: {e.__class__.__name__}') from None
  if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
    raise RowError(f'{field} is not a list of strings')
  return value


_FIG = re.compile(r'^\s*(?:the\s+)?fig(?:ure|s?\.?)\s*(\d+)?', re.IGNORECASE)
# Order matters: a perspective view names sides too ('front left perspective'), 'plan' alone is top.
_VIEW_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ('perspective', re.compile(r'\bperspective\b|\bisometric\b')),
    ('bottom', re.compile(r'\bbottom\b|\bunderside\b')),
    ('top', re.compile(r'\btop\b|\bplan view\b|\bplan\b')),
    ('rear', re.compile(r'\brear\b|\bback\b')),
    ('left', re.compile(r'\bleft\b')),
    ('right', re.compile(r'\bright\b')),
    ('front', re.compile(r'\bfront\b')),
    ('side', re.compile(r'\bside\b')),
)
_NOT_A_VIEW = re.compile(r'\bcross[- ]section|\bsectional\b|\benlarged\b|\bdetail\b|\bexploded\b')


def parse_view(description: str) -> str:
  """The view named by one fig_desc line ('FIG. 4 is a left side view thereof;' -> 'left')."""
  text = description.lower()
  view_part = text.split(' view')[0] if ' view' in text else text
  if _NOT_A_VIEW.search(view_part):
    return 'unknown'
  for view, pattern in _VIEW_RULES:
    if pattern.search(view_part):
      return view
  return 'unknown'


def figure_views(fig_desc: list[str]) -> list[str]:
  """One view per figure, in FIG order; a line without a FIG number counts as the next figure."""
  return [parse_view(line) for line in fig_desc if line.strip()]


@dataclasses.dataclass
class PatentRow:
  """One patent as every reader (IMPACT CSV, Red Book XML) hands it on: everything after the reader (views,
  sheets, records, report) works from this."""
  patent_id: str
  title: str
  claim: str
  caption: str
  label: int
  image_files: list[str]      # D00000 (front page) first, then one file per drawing sheet
  image_views: list[str]      # view per image; 'unknown' where the sheet->figure mapping is ambiguous
  mapping: str                # 'one_figure_per_sheet' | 'ambiguous' | 'no_view_named'
  repairs: list[str]
  locarno: str = ''           # '28-03' (class-subclass); '' when the source gives none

  @property
  def class_code(self) -> str:
    return CLASS_CODES[self.label]

  @property
  def class_name(self) -> str:
    return CLASS_NAMES[self.label]


def parse_row(row: dict[str, str]) -> PatentRow:
  """Validate and parse one CSV row (a dict keyed by IMPACT's column names)."""
  missing = [c for c in ('id', 'title', 'class', 'file_names', 'fig_desc', 'caption') if c not in row]
  if missing:
    raise RowError(f'missing column(s) {missing}')
  files = parse_list(row['file_names'], 'file_names')
  fig_desc = parse_list(row['fig_desc'], 'fig_desc')
  try:
    no_figs = int(row['no_figs']) if row.get('no_figs') else None
  except ValueError:
    raise RowError(f'no_figs is not an integer: {row.get("no_figs")!r}') from None
  return patent_row((row['id'] or '').strip(), (row['title'] or '').strip(), (row.get('claim') or '').strip(),
                    (row['caption'] or '').strip(), row['class'] or '', files, fig_desc, no_figs,
                    _csv_locarno(row.get('class_search') or ''))


def _csv_locarno(class_search: str) -> str:
  """IMPACT's class_search[0] is the Locarno code ('0202'); '' when the field is absent or not a list."""
  try:
    codes = ast.literal_eval(class_search) if class_search else []
  except (ValueError, SyntaxError):
    return ''
  return codes[0] if isinstance(codes, list) and codes and isinstance(codes[0], str) else ''


def patent_row(patent_id: str, title: str, claim: str, caption: str, uspc: str, files: list[str],
               fig_desc: list[str], no_figs: int | None, locarno: str = '') -> PatentRow:
  """The row record from a reader's fields: class, sheets in order, the view of each sheet where the
  sheet -> figure mapping is certain, the caption (or the title rule), the Locarno code's normal form."""
  if not patent_id:
    raise RowError('empty id')
  repairs = []
  if not caption:
    if not title:
      raise RowError('empty caption and empty title')
    caption = f'A design of a {title.lower()}.'
    repairs.append('empty caption replaced by the title')
  try:
    label = class_index(uspc)
  except ValueError as e:
    raise RowError(f'unknown class: {e}') from None
  if not files:
    raise RowError('file_names is empty')
  if locarno:
    try:
      locarno = locarno_code(locarno)
    except ValueError as e:
      repairs.append(f'unreadable Locarno class: {e}; kept without one')
      locarno = ''
  figures = figure_views(fig_desc)
  sheets = [f for f in files if not re.search(r'-D0+\.', f)]
  covers = [f for f in files if re.search(r'-D0+\.', f)]
  ordered = covers[:1] + sheets
  no_figs = len(figures) if no_figs is None else no_figs
  if figures and all(v == 'unknown' for v in figures):
    mapping = 'no_view_named'
    repairs.append('fig_desc names no view: all images labelled unknown')
    sheet_views = ['unknown'] * len(sheets)
  elif len(sheets) == no_figs == len(figures):
    mapping = 'one_figure_per_sheet'
    sheet_views = figures
  else:
    mapping = 'ambiguous'
    sheet_views = ['unknown'] * len(sheets)
  # The front-page drawing repeats one of the figures without saying which: its view stays unknown.
  views = ['unknown'] * len(covers[:1]) + sheet_views
  return PatentRow(patent_id=patent_id, title=title, claim=claim, caption=caption, label=label, image_files=ordered,
                   image_views=views, mapping=mapping, repairs=repairs, locarno=locarno)
