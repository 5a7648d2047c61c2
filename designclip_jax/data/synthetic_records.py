"""What the synthetic Red Book writes about one design patent besides its drawings: the records
synthetic_collection draws and synthetic_redbook writes as grant XML."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Reference:
  """One ``<us-citation>``: a patent document (patcit) or, with ``text``, literature (nplcit).
  ``source`` says how the model drew it (one of synthetic_collection.SOURCES, or 'family') and
  ``cited_index`` is the cited patent's index where it is in the collection, else -1; neither is
  written to the XML."""
  category: str
  source: str
  country: str = ''
  doc_number: str = ''
  kind: str = ''
  name: str = ''
  date: str = ''  # YYYYMM00, as the XML dates cited documents
  uspc: str = ''  # the cited design's USPC class, as the XML gives it for examiner citations of designs
  text: str = ''
  cited_index: int = -1


@dataclasses.dataclass(frozen=True)
class Relation:
  """One ``us-related-documents/<kind>/relation``: the parent application (its patent where granted)
  and the child application."""
  kind: str
  parent_application: str
  parent_filing: str
  parent_patent: str
  parent_grant: str
  parent_status: str
  child_application: str


@dataclasses.dataclass(frozen=True)
class Person:
  last: str
  first: str
  city: str = ''
  state: str = ''
  country: str = ''


@dataclasses.dataclass(frozen=True)
class Patent:
  """Everything the grant XML and the IMPACT row say about one patent, besides its drawings."""
  index: int
  number: str  # 'D0700000'
  grant_date: str  # YYYYMMDD
  application: str
  filing_date: str
  code: str  # USPC class, 'D28'
  noun: str
  locarno: str  # '2803'
  locarno_edition: str
  uspc: tuple[str, ...]  # main first, padded as <classification-national> pads them
  priority: tuple[tuple[str, str, str, str], ...]  # (kind, country, doc-number, date)
  relations: tuple[Relation, ...]
  references: tuple[Reference, ...]
  inventors: tuple[Person, ...]
  applicant: str  # an organisation, or '' when the inventors apply
  examiners: tuple[Person, ...]  # primary, then assistant if any
  department: str
  design_root: int  # the patent whose object the drawings show: the family's first in the collection
