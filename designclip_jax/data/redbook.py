"""Parsing of USPTO Red Book design grant XML (``USD<number>-<date>.XML``): the fields of the row record
(title, claim, figure descriptions, sheets, class, Locarno) and the bibliographic fields of
``patents.jsonl`` in their normal forms (ids, dates, USPC, Locarno, family, priority, citations).

Pure functions of bytes and strings. Grant DTDs this reads (what differs between them, for what is read
here): v4.3 (2012-12-04), v4.4 (2013-05-16) and v4.5 (2014-04-03) hold citations in
``us-references-cited/us-citation`` with the categories 'cited by examiner', 'cited by applicant' and
'cited by third party'; v4.0 (2004-12-02), v4.1 (2005-08-25) and v4.2 (2006-08-23, grants of 2007 to
early 2013) hold them in ``references-cited/citation``, and what the applicant cited is 'cited by other'.
Everything else read here (publication and application references, ``classification-locarno``,
``classification-national``, ``us-related-documents``, ``priority-claims``, ``description-of-drawings``,
``drawings``, ``claims``) has the same element names in v4.0 to v4.5. ST.32 files (before 2005) are
refused with their own reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import xml.etree.ElementTree as ET
from html.entities import name2codepoint

from designclip_jax.data.classes import locarno_code, uspc_code
from designclip_jax.data.impact import figure_views

# Locarno editions in force for grants since the v4 DTDs (the 8th from 2004 to the 15th from 2025).
LOCARNO_EDITIONS = frozenset(str(e) for e in range(6, 16))
EXAMINER, APPLICANT, THIRD_PARTY = 'cited by examiner', 'cited by applicant', 'cited by third party'
CITATION_CATEGORIES = {EXAMINER: 'examiner', APPLICANT: 'applicant', 'cited by other': 'applicant'}
_FIGURE_PARAGRAPH = re.compile(r'^\s*(?:the\s+)?fig(?:ure)?s?\b', re.IGNORECASE)
_ENTITIES = {name: chr(code) for name, code in name2codepoint.items()}  # ISO entities the DTDs declare


class GrantError(ValueError):
  """A grant XML that cannot be read as a design patent; the message is the report's reason."""


@dataclasses.dataclass
class Grant:
  """One design grant as read from its XML."""
  patent_id: str             # 'D0907292'
  application: str           # 'US29680800'
  title: str
  claim: str
  fig_desc: list[str]        # one paragraph per figure, as IMPACT's fig_desc
  image_files: list[str]     # as the XML names them (front page D00000 first)
  no_figs: int | None
  uspc: list[str]            # normal forms, main first
  locarno: str               # '28-03'; '' when absent or unreadable
  locarno_edition: str
  grant_date: str            # 'YYYY-MM-DD'
  filing_date: str
  family: list[dict]         # related US documents: relation, parent application (+ date, patent), child
  priority: list[dict]       # claimed priorities: document, date, kind
  cited_by_examiner: list[str]
  cited_by_applicant: list[str]
  citation_counts: dict[str, int]  # by category as written (patent and literature citations)
  dtd_version: str
  notes: list[str]           # kept as read but worth a report line (no Locarno, unknown edition, ...)

  def family_nodes(self) -> list[tuple[str, str]]:
    """(document, date) of every application and claimed priority linked to this patent: patents that
    share one belong to one family."""
    nodes = [(self.application, self.filing_date)]
    for relation in self.family:
      nodes += [(relation['application'], relation['filing_date']), (relation['child'], '')]
    return nodes + [(p['document'], p['date']) for p in self.priority]

  def json(self, family_id: str) -> dict:
    """The patents.jsonl object."""
    return {'id': self.patent_id, 'title': self.title, 'claim': self.claim, 'grant_date': self.grant_date,
            'filing_date': self.filing_date, 'locarno': self.locarno, 'locarno_edition': self.locarno_edition,
            'uspc': self.uspc, 'family': self.family, 'family_id': family_id, 'priority': self.priority,
            'cited_by_examiner': self.cited_by_examiner, 'cited_by_applicant': self.cited_by_applicant}


def patent_number(text: str) -> str:
  """A US design patent's normal form, 'D' + 7 digits, however written ('D845543', 'D 0845543', 'USD845,543');
  '' if ``text`` is not a design patent number."""
  m = re.fullmatch(r'(?:US)?D0*(\d{1,7})', re.sub(r'[\s,]', '', text.upper()))
  return f'D{int(m.group(1)):07d}' if m else ''


def document_number(country: str, number: str) -> str:
  """A cited or related document: a US design patent as ``patent_number``, anything else as country +
  number with spaces removed ('US4621424', 'JPD1481688', 'EM007488747-0001')."""
  country = (country or '').strip().upper()
  if country in ('US', ''):
    design = patent_number(number)
    if design:
      return design
  return country + re.sub(r'\s', '', number or '')


def iso_date(text: str) -> str:
  """'20210105' -> '2021-01-05'; '' for an empty or impossible date."""
  try:
    return datetime.datetime.strptime((text or '').strip(), '%Y%m%d').strftime('%Y-%m-%d')
  except ValueError:
    return ''


def _text(element: ET.Element | None) -> str:
  """All text inside ``element``, whitespace runs collapsed (figure references are child elements)."""
  return ' '.join(''.join(element.itertext()).split()) if element is not None else ''


def _document(element: ET.Element | None) -> tuple[str, str, str]:
  """(country, doc-number, date) of a document-id."""
  if element is None:
    return '', '', ''
  return element.findtext('country') or '', (element.findtext('doc-number') or '').strip(), element.findtext('date') or ''


def parse_xml(data: bytes) -> ET.Element:
  parser = ET.XMLParser()
  parser.entity.update(_ENTITIES)
  try:
    parser.feed(data)
    return parser.close()
  except ET.ParseError as e:
    raise GrantError(f'grant XML does not parse: {e}') from None


def _related(biblio: ET.Element) -> list[dict]:
  """us-related-documents: every relation (continuation, division, continuation-in-part, ...)."""
  related = []
  documents = biblio.find('us-related-documents')
  for kind in documents if documents is not None else []:
    for relation in kind.findall('relation'):
      country, number, date = _document(relation.find('parent-doc/document-id'))
      parent_grant = _document(relation.find('parent-doc/parent-grant-document/document-id'))
      child_country, child_number, _ = _document(relation.find('child-doc/document-id'))
      related.append({'relation': kind.tag, 'application': document_number(country or 'US', number),
                      'filing_date': iso_date(date),
                      'patent': document_number(parent_grant[0] or 'US', parent_grant[1]) if parent_grant[1] else '',
                      'child': document_number(child_country or 'US', child_number) if child_number else ''})
  return related


def _uspc(biblio: ET.Element, notes: list[str]) -> list[str]:
  """classification-national in normal forms, main first, each once."""
  national = biblio.find('classification-national')
  elements = [national.find('main-classification')] + national.findall('further-classification') if (
      national is not None) else []
  codes = []
  for element in elements:
    try:
      code = uspc_code(element.text or '') if element is not None else ''
    except ValueError as e:
      notes.append(f'unreadable USPC class: {e}')
      continue
    if code and code not in codes:
      codes.append(code)
  return codes


def _locarno(biblio: ET.Element, notes: list[str]) -> tuple[str, str]:
  """(class-subclass, edition); a missing or unreadable class or an unknown edition is noted, never dropped."""
  edition = (biblio.findtext('classification-locarno/edition') or '').strip()
  written = biblio.findtext('classification-locarno/main-classification')
  if written is None:
    notes.append('no Locarno class in the XML: kept without one')
    return '', edition
  if edition not in LOCARNO_EDITIONS:
    notes.append(f'unknown Locarno edition: {edition or "(none)"!r}; class kept as written')
  try:
    return locarno_code(written), edition
  except ValueError as e:
    notes.append(f'unreadable Locarno class: {e}; kept without one')
    return '', edition


def _citations(biblio: ET.Element) -> tuple[list[str], list[str], dict[str, int], list[str]]:
  """(cited by examiner, cited by applicant, counts by category, notes). v4.3+ and v4.0-4.2 containers."""
  container = biblio.find('us-references-cited')
  entries = container.findall('us-citation') if container is not None else []
  if container is None and biblio.find('references-cited') is not None:
    entries = biblio.find('references-cited').findall('citation')
  lists = {'examiner': [], 'applicant': []}
  counts, unlisted = {}, {}
  for entry in entries:
    category = (entry.findtext('category') or '').strip()
    counts[category] = counts.get(category, 0) + 1
    patcit = entry.find('patcit/document-id')
    if patcit is None:
      continue  # literature (nplcit): counted, not a document to resolve
    if category in CITATION_CATEGORIES:
      lists[CITATION_CATEGORIES[category]].append(document_number(*_document(patcit)[:2]))
    else:
      unlisted[category] = unlisted.get(category, 0) + 1
  notes = [f'citation category {c or "(none)"!r}: {n} cited patent document(s) in neither citation list'
           for c, n in unlisted.items()]
  return lists['examiner'], lists['applicant'], counts, notes


def parse_grant(data: bytes) -> Grant:
  """A design grant's fields from its XML; GrantError when it does not parse or is not a design grant."""
  root = parse_xml(data)
  if root.tag != 'us-patent-grant':
    raise GrantError(f'not a v4 US patent grant XML (root element <{root.tag}>; ST.32 files before 2005 are not read)')
  biblio = root.find('us-bibliographic-data-grant')
  if biblio is None:
    raise GrantError('grant XML without us-bibliographic-data-grant')
  _, number, grant_date = _document(biblio.find('publication-reference/document-id'))
  kind = biblio.findtext('publication-reference/document-id/kind') or ''
  patent_id = patent_number(number)
  if not patent_id or not kind.startswith('S'):
    raise GrantError(f'not a design patent: {number or "no number"} kind {kind or "none"}')
  app_country, app_number, filing_date = _document(biblio.find('application-reference/document-id'))
  notes = []
  uspc = _uspc(biblio, notes)
  locarno, edition = _locarno(biblio, notes)
  examiner, applicant, counts, citation_notes = _citations(biblio)
  description = root.find('description/description-of-drawings')
  paragraphs = [_text(p) for p in description.iter('p')] if description is not None else []
  no_figs = biblio.findtext('figures/number-of-figures')
  priority = [{'document': document_number(*_document(p)[:2]), 'date': iso_date(p.findtext('date')),
               'kind': p.get('kind', '')} for p in biblio.findall('priority-claims/priority-claim')]
  return Grant(
      patent_id=patent_id, application=document_number(app_country or 'US', app_number), title=_text(
          biblio.find('invention-title')), claim=_text(root.find('claims/claim/claim-text')),
      fig_desc=[p for p in paragraphs if _FIGURE_PARAGRAPH.match(p)],
      image_files=[img.get('file') for img in root.findall('drawings/figure/img') if img.get('file')],
      no_figs=int(no_figs) if no_figs and no_figs.strip().isdigit() else None, uspc=uspc, locarno=locarno,
      locarno_edition=edition, grant_date=iso_date(grant_date), filing_date=iso_date(filing_date),
      family=_related(biblio), priority=priority, cited_by_examiner=examiner, cited_by_applicant=applicant,
      citation_counts=counts, dtd_version=root.get('dtd-version', ''), notes=notes + citation_notes)


def caption_from_grant(title: str, claim: str, fig_desc: list[str]) -> str:
  """The caption of a patent without an IMPACT caption: its claim without an opening 'I claim' and the
  closing 'as shown (and described)', else 'A design of a <title>.' (the CSV rule); then the views its
  figures name, in figure order ('The ornamental design for a shaving blade cartridge. Views: perspective,
  bottom, left, right, rear, front.')."""
  sentence = re.sub(r'^(?:i|we|what is) claim(?:ed is)?:?\s*', '', claim.strip(), flags=re.IGNORECASE)
  sentence = re.sub(r',?\s*as shown(?: and described)?\s*\.?\s*$', '', sentence, flags=re.IGNORECASE)
  sentence = sentence[:1].upper() + sentence[1:]
  sentence = sentence.rstrip('. ') + '.' if sentence else f'A design of a {title.strip().lower()}.'
  views = [v for v in dict.fromkeys(figure_views(fig_desc)) if v != 'unknown']
  return sentence + (f' Views: {", ".join(views)}.' if views else '')
