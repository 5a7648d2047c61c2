"""What an index stores about each patent beside its drawings, for an examiner's filters and the record of a
search: grant date, effective filing date, Locarno class-subclass and family id.

An ingested set gives dates through its ``patents.jsonl`` (``ingest --redbook`` writes it from the grant XML;
the effective filing date is ``eval.prior_art``'s: the earliest claimed priority date, else the filing date)
and Locarno codes and families through its record index. A set ingested from IMPACT CSVs alone has no dates
and no families (each patent is its own), and Locarno codes only where the CSV's class_search gave them; a
folder of drawings or a DeepPatent tree has none of them. Which fields a source has is written in index.json
(``patent_fields``, with a ``patent_fields_note`` saying why any are missing).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from etils import epath

from designclip_jax.eval import prior_art

FIELDS = ('grant_date', 'effective_filing_date', 'locarno', 'family_id')
DATE_FIELDS = ('grant_date', 'effective_filing_date')
NONE = {'grant_date': None, 'effective_filing_date': None, 'locarno': '', 'family_id': ''}
FILE_SOURCE_NOTE = 'drawing files carry no dates, Locarno codes or families'


class PatentFieldsError(ValueError):
  """A patents.jsonl that cannot be read; the message names the file and line."""


def _date(text) -> np.datetime64:
  return np.datetime64(text or 'NaT', 'D')


@dataclasses.dataclass(frozen=True)
class PatentDates:
  """Grant and effective filing dates of a data set's patents, sorted by id (NaT: not given)."""
  ids: np.ndarray
  grant: np.ndarray
  effective: np.ndarray
  without_filing_date: int

  def lookup(self, ids) -> tuple[np.ndarray, np.ndarray]:
    """(grant, effective) dates of ``ids``; NaT for an id without a line."""
    ids = np.asarray(ids, dtype=self.ids.dtype if len(self.ids) else str)
    at = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
    found = (self.ids[at] == ids) if len(self.ids) else np.zeros(len(ids), bool)
    nat = np.datetime64('NaT', 'D')
    return np.where(found, self.grant[at], nat), np.where(found, self.effective[at], nat)


def read_dates(path: str) -> PatentDates:
  """Dates of every line of a patents.jsonl, one pass (a few numbers per patent are kept, not the lines)."""
  ids, grant, filing, priority = [], [], [], []
  with epath.Path(path).open() as f:
    for number, line in enumerate(f, 1):
      try:
        p = json.loads(line)
        ids.append(p['id'])
        grant.append(_date(p['grant_date']))
        filing.append(_date(p['filing_date']))
        priority.append(min((_date(c['date']) for c in p['priority'] if c.get('date')), default=_date('')))
      except (ValueError, KeyError, TypeError) as e:
        raise PatentFieldsError(f'{path} line {number}: not a patent line as ingest --redbook writes it ({e})') \
            from None
  filing, priority = np.array(filing, 'datetime64[D]'), np.array(priority, 'datetime64[D]')
  has_filing = ~np.isnat(filing)
  effective = np.full(len(ids), np.datetime64('NaT'), 'datetime64[D]')
  effective[has_filing] = prior_art.effective_filing_dates(filing[has_filing], priority[has_filing])
  ids = np.array(ids, dtype=str)
  order = np.argsort(ids, kind='stable')
  return PatentDates(ids[order], np.array(grant, 'datetime64[D]')[order], effective[order],
                     int((~has_filing).sum()))

