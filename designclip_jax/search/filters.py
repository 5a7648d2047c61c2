"""An examiner's filters as typed (command-line flags, a line of a queries file, the page's fields) -> checked
values, or a one-line error naming the field.

Lists: ``--before``, ``--locarno`` and ``--class`` may be repeated and each value may hold several items
separated by commas (``--locarno 28,06-01 --locarno 21``); a queries file or the API takes a string of the same
form or a JSON list. ``--locarno`` takes a class (``28``: every subclass of it) or a class-subclass (``28-03``,
``2803``); a patent passes when its code is any of them. ``--class`` takes USPC design classes (``D7``); a
patent passes when its class is any of them. ``--before`` takes dates (``YYYY-MM-DD``): a patent passes when
its effective filing date (its earliest claimed priority date, else its filing date: ``eval.prior_art``) is
strictly before the date; several dates make one search each, as of each date.
"""

from __future__ import annotations

import dataclasses
import datetime
import re

from designclip_jax.data.classes import CLASS_CODES, LOCARNO, locarno_code
from designclip_jax.search.index import SearchError

TARGETS = {'drawings': ('drawing',), 'captions': ('caption',), 'all': ('drawing', 'caption')}
MAX_VALUES = 64  # items per list filter
_CLASS = re.compile(r'^\s*D\s*0*(\d+)\s*$', re.I)
_DATE = re.compile(r'^\d{4}-\d{2}-\d{2}$')


def items(raw, name: str) -> list[str]:
  """The items of a list filter: None, a string ('a,b') or a list of strings, each split at commas."""
  if raw is None:
    return []
  if isinstance(raw, str):
    raw = [raw]
  if not isinstance(raw, (list, tuple)) or not all(isinstance(x, str) for x in raw):
    raise SearchError(f'{name} must be a string or a list of strings, got {raw!r}')
  out = [part.strip() for value in raw for part in value.split(',') if part.strip()]
  if len(out) > MAX_VALUES:
    raise SearchError(f'{name} lists {len(out)} values; at most {MAX_VALUES}')
  return out


def parse_class(text: str, name: str = '--class') -> str:
  """A USPC design class as the JSON writes it ('D7'; 'd07' and 'D 7' too) -> 'D7'."""
  m = _CLASS.match(text)
  code = f'D{int(m.group(1))}' if m else text
  if code not in CLASS_CODES:
    raise SearchError(f'{name} {text!r} is not a USPC design class; use one of {", ".join(CLASS_CODES)}')
  return code


def parse_locarno(text: str, name: str = '--locarno') -> str:
  """'28' (a class) or '28-03' / '2803' (a class-subclass) -> '28' or '28-03'."""
  digits = re.sub(r'[\s.-]', '', text)
  if re.fullmatch(r'\d{1,2}', digits):
    code = f'{int(digits):02d}'
    if code not in LOCARNO.codes:
      raise SearchError(f'{name} {text!r} is not a Locarno class (01-32 or 99)')
    return code
  try:
    return locarno_code(digits)
  except ValueError:
    raise SearchError(f'{name} {text!r} is not a Locarno class (e.g. 28) or class-subclass (e.g. 28-03)') from None


def parse_date(text: str, name: str = '--before', today: datetime.date | None = None) -> str:
  """A cut-off date 'YYYY-MM-DD', not after today (UTC)."""
  try:
    if not _DATE.match(text):
      raise ValueError
    day = datetime.date.fromisoformat(text)
  except ValueError:
    raise SearchError(f'{name} {text!r} is not a date (YYYY-MM-DD)') from None
  today = today or datetime.datetime.now(datetime.timezone.utc).date()
  if day > today:
    raise SearchError(f'{name} {text} is in the future (today is {today.isoformat()} UTC)')
  return text


@dataclasses.dataclass(frozen=True)
class Filters:
  """Checked filters of one query. ``before``: its cut-offs (none: no date filter, or for a query by patent
  its effective filing date); ``locarno``, ``classes``: any of them (none: any)."""
  before: tuple[str, ...] = ()
  locarno: tuple[str, ...] = ()
  classes: tuple[str, ...] = ()
  target: str = 'drawings'

  @property
  def kinds(self) -> tuple[str, ...]:
    return TARGETS[self.target]

  def to_json(self) -> dict:
    return {'locarno': list(self.locarno), 'class': list(self.classes), 'target': self.target}


def parse(before=None, locarno=None, classes=None, target: str = 'drawings', *, prefix: str = '',
          names=('--before', '--locarno', '--class', '--target')) -> Filters:
  """Filters from their raw form (``items``); ``prefix`` starts each error ('queries.jsonl line 3: '),
  ``names`` name the fields as the input calls them."""
  named = [prefix + n for n in names]
  if target not in TARGETS:
    raise SearchError(f'{named[3]} {target!r} is not one of {", ".join(TARGETS)}')
  return Filters(before=tuple(dict.fromkeys(parse_date(t, named[0]) for t in items(before, named[0]))),
                 locarno=tuple(dict.fromkeys(parse_locarno(t, named[1]) for t in items(locarno, named[1]))),
                 classes=tuple(dict.fromkeys(parse_class(t, named[2]) for t in items(classes, named[2]))),
                 target=target)
