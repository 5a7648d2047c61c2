"""Synthetic Red Book layout: byte-identical per seed, the USPTO's names, XML with the real files'
elements, family links both ways, citations as the stated model says, and the IMPACT rows beside."""

import ast
import calendar
import csv
import datetime
import glob
import io
import json
import os
import re
import tarfile
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
from PIL import Image

from designclip_jax.data import synthetic, synthetic_redbook
from designclip_jax.data import synthetic_collection as model
from designclip_jax.data.synthetic_articles import LOCARNO, NOUNS
from designclip_jax.data.synthetic_drawing import draw_sheets, sample_object
from tests.conftest import IMPACT_SAMPLE

N_PATENTS, WEEKS, SEED = 48, 4, 6
BIB = 'us-bibliographic-data-grant'


@pytest.fixture(scope='module')
def redbook(tmp_path_factory):
  out = tmp_path_factory.mktemp('redbook')
  tars = synthetic_redbook.generate(str(out), N_PATENTS, SEED, WEEKS, workers=1, progress=False)
  return out, tars


def _members(tars):
  """(tar name, member, bytes) of every member, in order."""
  for path in tars:
    with tarfile.open(path) as tar:
      for member in tar:
        yield os.path.basename(path), member, tar.extractfile(member).read() if member.isfile() else b''


@pytest.fixture(scope='module')
def patents(redbook):
  """Per design patent: its parsed XML, the ZIP's file names and bytes, the tar it came in."""
  _, tars = redbook
  found = {}
  for tar_name, member, data in _members(tars):
    if '/DESIGN/' in member.name:
      archive = zipfile.ZipFile(io.BytesIO(data))
      files = {name.split('/')[-1]: archive.read(name) for name in archive.namelist()}
      xml_name = next(n for n in files if n.endswith('.XML'))
      root = ET.fromstring(files[xml_name])
      found[root.findtext(f'{BIB}/publication-reference/document-id/doc-number')] = {
          'root': root, 'files': files, 'zip_names': archive.namelist(), 'tar': tar_name, 'member': member.name}
  return found


def _design_number(text: str) -> int | None:
  """A US design doc-number however written ('D845543', 'D0845543', 'D 0845543') as an int."""
  m = re.fullmatch(r'D0*(\d+)', re.sub(r'\s', '', text))
  return int(m.group(1)) if m else None


def _uspc(text: str) -> tuple[str, int]:
  """USPC class and subclass by the USPTO parser's rule: 3 characters of class, 3 of subclass, then
  decimals; a leading space shifts the 'D' ('D28 47' D28/47, 'D 2731' D2/731, ' D9727' D9/727)."""
  fixed = 'D ' + text[2:] if text.startswith(' D') else text
  assert re.fullmatch(r'D[ \d]\d[ \d]{2}\d\d*', fixed), text
  return f'D{int(fixed[1:3])}', int(fixed[3:6])


def _date(text: str) -> datetime.date:
  return datetime.datetime.strptime(text, '%Y%m%d').date()


def _tree_bytes(folder):
  return {name: open(os.path.join(folder, name), 'rb').read() for name in sorted(os.listdir(folder))}


def test_same_seed_gives_byte_identical_files_with_any_worker_count(redbook, tmp_path):
  out, _ = redbook
  synthetic_redbook.generate(str(tmp_path / 'b'), N_PATENTS, SEED, WEEKS, workers=2, progress=False)
  assert _tree_bytes(out) == _tree_bytes(tmp_path / 'b')
  synthetic_redbook.generate(str(tmp_path / 'c'), N_PATENTS, SEED + 1, WEEKS, workers=1, progress=False)
  other = _tree_bytes(tmp_path / 'c')
  assert other.keys() == _tree_bytes(out).keys() and other != _tree_bytes(out)


def test_tar_and_zip_names_follow_the_uspto_patterns(redbook, patents):
  out, tars = redbook
  assert sorted(os.listdir(out)) == sorted([os.path.basename(t) for t in tars] + ['synthetic.csv'])
  days = [_date(re.fullmatch(r'I(\d{8})\.tar', os.path.basename(t)).group(1)) for t in tars]
  assert len(days) == WEEKS and all(d.weekday() == 1 for d in days)  # USPTO issues on Tuesdays
  assert [b - a for a, b in zip(days, days[1:])] == [datetime.timedelta(days=7)] * (WEEKS - 1)
  kinds = {'DESIGN': r'USD\d{7}', 'PLANT': r'USPP\d{6}', 'REISSUE': r'USRE\d{6}', 'UTIL': r'US\d{8}'}
  seen = {kind: 0 for kind in kinds}
  for tar_name, member, data in _members(tars):
    day = tar_name[1:9]
    assert member.mtime == calendar.timegm(_date(day).timetuple()) and member.uid == member.gid == 0
    if member.isdir():
      assert re.fullmatch(rf'I{day}(/(DESIGN|PLANT|REISSUE|UTIL\d{{4}}))?', member.name), member.name
      continue
    folder, name = member.name.split('/')[1:]
    kind = re.sub(r'\d+$', '', folder)
    assert re.fullmatch(rf'{kinds[kind]}-{day}\.ZIP', name), member.name
    stem = name[:-4]
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names[0] == f'{stem}/{stem}.XML'
    if kind == 'DESIGN':
      assert names[1:] == [f'{stem}/{stem}-D{i:05d}.TIF' for i in range(len(names) - 1)] and len(names) >= 5
    seen[kind] += 1
  assert seen == {'DESIGN': N_PATENTS, 'PLANT': WEEKS, 'REISSUE': WEEKS, 'UTIL': WEEKS}
  sheet = next(iter(patents.values()))['files']
  tiff = Image.open(io.BytesIO(next(v for k, v in sheet.items() if k.endswith('-D00001.TIF'))))
  assert tiff.mode == '1' and tiff.info['compression'] == 'group4'


def test_every_xml_parses_with_the_fields_of_the_real_files(patents):
  numbers = sorted(patents)
  assert numbers == [f'D{700000 + k:07d}' for k in range(N_PATENTS)]  # numbered in grant order
  for number, p in patents.items():
    root, bib = p['root'], p['root'].find(BIB)
    assert root.tag == 'us-patent-grant' and root.get('dtd-version') == 'v4.5 2014-04-03'
    pub = bib.find('publication-reference/document-id')
    grant = _date(pub.findtext('date'))
    assert pub.findtext('kind') == 'S1' and p['tar'] == f'I{pub.findtext("date")}.tar'
    app = bib.find('application-reference')
    assert app.get('appl-type') == 'design' and re.fullmatch(r'29\d{6}', app.findtext('document-id/doc-number'))
    filed = _date(app.findtext('document-id/date'))
    assert datetime.timedelta(days=180) <= grant - filed <= datetime.timedelta(days=1100 + 7 * WEEKS)
    first_filed = min([filed] + [_date(d.text) for d in bib.iterfind('us-related-documents/*/relation/parent-doc/'
                                                                         'document-id/date')])
    for claim in bib.findall('priority-claims/priority-claim'):  # within 6 months of the first US filing
      assert claim.findtext('country') in ('EM', 'CN', 'JP', 'KR') and claim.findtext('doc-number')
      assert datetime.timedelta(days=20) <= first_filed - _date(claim.findtext('date')) <= datetime.timedelta(days=182)
    title = bib.findtext('invention-title')
    locarno = bib.find('classification-locarno')
    assert locarno.findtext('main-classification') == LOCARNO[title.lower()]
    assert locarno.findtext('edition') == ('13' if grant.year >= 2021 else '12')
    main_class, _ = _uspc(bib.findtext('classification-national/main-classification'))
    for further in bib.findall('classification-national/further-classification'):
      assert _uspc(further.text)[0] == main_class
    assert title.lower() in NOUNS[main_class]
    claim_text = root.findtext('claims/claim/claim-text')
    assert claim_text == f'The ornamental design for a {title.lower()}, as shown and described.'
    paragraphs = root.findall('description/description-of-drawings/p')
    figures = [par for par in paragraphs if par.find('figref') is not None]
    assert [par.findtext('figref') for par in figures] == [f'FIG. {i}' for i in range(1, len(figures) + 1)]
    assert len(figures) == int(bib.findtext('figures/number-of-figures'))
    drawn = [img.get('file') for img in root.findall('drawings/figure/img')]
    assert drawn == sorted(n for n in p['files'] if n.endswith('.TIF'))
    assert len(drawn) == 1 + int(bib.findtext('figures/number-of-drawing-sheets'))
    assert bib.find('examiners/primary-examiner/last-name') is not None
    for citation in bib.findall('us-references-cited/us-citation'):
      assert citation.findtext('category') in ('cited by examiner', 'cited by applicant')
      doc = citation.find('patcit/document-id')
      assert (doc is None) == (citation.find('nplcit/othercit') is not None)
      if doc is not None and doc.findtext('kind') == 'S':
        assert re.fullmatch(r'(\d{4})(0[1-9]|1[0-2])00', doc.findtext('date'))
        assert _design_number(doc.findtext('doc-number')) is not None
  every = [e for p in patents.values() for e in p['root'].iter()]
  tags = {e.tag for e in every}
  assert {'priority-claims', 'us-related-documents', 'nplcit', 'assistant-examiner', 'further-classification'} <= tags
  forms = {re.sub(r'\d', '9', e.findtext('doc-number')) for e in every if e.tag == 'document-id'
           and e.findtext('kind') == 'S'}
  assert {'D999999', 'D9999999', 'D 9999999'} <= forms


def _element_paths(root):
  paths = set()

  def walk(element, prefix):
    paths.add(f'{prefix}/{element.tag}')
    for child in element:
      walk(child, f'{prefix}/{element.tag}')
  walk(root, '')
  return paths


def test_xml_uses_only_element_paths_the_real_files_use(patents):
  if not (IMPACT_SAMPLE / 'sample_data.csv').is_file():
    pytest.skip(f'real IMPACT sample not found at {IMPACT_SAMPLE}')
  real = set().union(*(_element_paths(ET.parse(f).getroot()) for f in glob.glob(str(IMPACT_SAMPLE / '*' / '*.XML'))))
  ours = set().union(*(_element_paths(p['root']) for p in patents.values()))
  assert ours - real == set()
  # and the ones protocols.md §8 reads are all there
  assert {f'/us-patent-grant/{BIB}/{path}' for path in (
      'classification-locarno/edition', 'classification-national/main-classification',
      'us-references-cited/us-citation/patcit/document-id/doc-number', 'us-references-cited/us-citation/category',
      'priority-claims/priority-claim/date', 'examiners/primary-examiner/last-name')} <= ours


def _app_index(patents):
  return {p['root'].findtext(f'{BIB}/application-reference/document-id/doc-number'): p for p in patents.values()}


def _ink(tiff: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(tiff)).convert('L')) < 128


def test_family_links_point_both_ways(patents):
  by_app = _app_index(patents)
  in_collection = 0
  for number, p in patents.items():
    bib = p['root'].find(BIB)
    child_app = bib.findtext('application-reference/document-id/doc-number')
    child_filed = bib.findtext('application-reference/document-id/date')
    family = {r.text for r in bib.iterfind('us-related-documents/*/relation/parent-doc/document-id/doc-number')}
    for relation in bib.findall('us-related-documents/*/relation'):
      # the chain runs from this patent's own application up through its ancestors
      assert relation.findtext('child-doc/document-id/doc-number') == child_app
      parent_app = relation.findtext('parent-doc/document-id/doc-number')
      parent_filed = relation.findtext('parent-doc/document-id/date')
      assert parent_filed < child_filed
      parent = by_app.get(parent_app)
      if parent is None:
        assert relation.findtext('parent-doc/parent-status') == 'ABANDONED'
        break
      in_collection += 1
      parent_bib = parent['root'].find(BIB)
      assert parent_bib.findtext('application-reference/document-id/date') == parent_filed
      grant_doc = relation.find('parent-doc/parent-grant-document/document-id')
      parent_number = parent_bib.findtext('publication-reference/document-id/doc-number')
      assert _design_number(grant_doc.findtext('doc-number')) == _design_number(parent_number)
      parent_granted = parent_bib.findtext('publication-reference/document-id/date')
      assert grant_doc.findtext('date') in (None, parent_granted)
      # co-pending: the child was filed before its parent was granted, and granted after it
      assert child_filed < parent_granted < bib.findtext('publication-reference/document-id/date')
      assert parent_bib.findtext('invention-title') == bib.findtext('invention-title')
      assert (parent_bib.findtext('classification-locarno/main-classification')
              == bib.findtext('classification-locarno/main-classification'))
      # varied drawings of the same object: the front-page perspectives overlap far more than
      # those of any other design of the same article
      cover = _ink(p['files'][f'US{number}-{bib.findtext("publication-reference/document-id/date")}-D00000.TIF'])

      def overlap(other):
        ink = _ink(next(v for k, v in other['files'].items() if k.endswith('-D00000.TIF')))
        return (ink & cover).sum() / (ink | cover).sum()
      title = bib.findtext('invention-title')
      strangers = [overlap(o) for o in patents.values() if o is not p
                   and o['root'].findtext(f'{BIB}/invention-title') == title
                   and o['root'].findtext(f'{BIB}/application-reference/document-id/doc-number') not in family
                   and o['root'].find(f'{BIB}/us-related-documents') is None]
      assert overlap(parent) > max(strangers, default=0) and overlap(parent) > 0.5, (overlap(parent), strangers)
      sheets = [{v for k, v in q['files'].items() if k.endswith('.TIF')} for q in (p, parent)]
      assert sheets[0] != sheets[1]
      child_app, child_filed = parent_app, parent_filed
  assert in_collection >= 2


def _effective(bib) -> str:
  priority = [c.findtext('date') for c in bib.findall('priority-claims/priority-claim')]
  return min(priority) if priority else bib.findtext('application-reference/document-id/date')


def test_cited_designs_in_the_collection_were_granted_and_filed_earlier(patents):
  by_number = {_design_number(n): p['root'].find(BIB) for n, p in patents.items()}
  cited = late = 0
  for p in patents.values():
    bib = p['root'].find(BIB)
    parents = {_design_number(d.text) for d in bib.iterfind('us-related-documents/*/relation/parent-doc/'
                                                             'parent-grant-document/document-id/doc-number')}
    for doc in bib.iterfind('us-references-cited/us-citation/patcit/document-id'):
      number = _design_number(doc.findtext('doc-number')) if doc.findtext('country') == 'US' else None
      if number not in by_number:
        continue
      cited += 1
      other = by_number[number]
      assert other.findtext('publication-reference/document-id/date') < bib.findtext('publication-reference/document-id/date')
      assert doc.findtext('date')[:6] == other.findtext('publication-reference/document-id/date')[:6]
      if number not in parents and _effective(other) >= _effective(bib):
        late += 1
        assert (_uspc(other.findtext('classification-national/main-classification'))[0]
                == _uspc(bib.findtext('classification-national/main-classification'))[0])
  total = sum(len(p['root'].findall(f'{BIB}/us-references-cited/us-citation')) for p in patents.values())
  assert 0 < cited < total and late <= 0.15 * cited


@pytest.fixture(scope='module')
def large():
  """A 2,000-patent collection over 60 weeks, records only (no drawings): (collection, records)."""
  c = model.Collection(2000, seed=4, weeks=60)
  return c, [c.patent(k) for k in range(c.n)]


def test_family_chains_link_each_application_to_its_parent(large):
  c, records = large
  by_app = {r.application: r for r in records}
  chains = 0
  for record in records:
    child = record
    for i, rel in enumerate(record.relations):
      assert rel.child_application == child.application
      parent = by_app.get(rel.parent_application)
      if parent is None:
        assert rel.parent_status == 'ABANDONED' and i == len(record.relations) - 1
        break
      assert (rel.parent_filing, rel.parent_patent) == (parent.filing_date, f'D{int(parent.number[1:])}')
      assert rel.parent_grant == ('' if i == 0 else parent.grant_date)  # the USPTO omits the direct parent's
      assert child.filing_date < parent.grant_date < child.grant_date and parent.noun == record.noun
      assert record.design_root in (parent.index, parent.design_root)
      child = parent
    chains += len(record.relations) >= 2 and record.relations[1].parent_patent != ''
  assert chains > 20
  # a foreign priority is claimed within one family only (a child claims its parent's), also at 200k
  # patents, where numbers drawn at random would repeat
  claimed = {}
  for record in records:
    for _, country, number, _ in record.priority:
      claimed.setdefault((country, number), set()).add(int(c.root[record.index]))
  assert len(claimed) > 100 and all(len(roots) == 1 for roots in claimed.values())
  big = model.Collection(200_000, seed=4)
  owners = np.flatnonzero(big.priority_owner == np.arange(big.n))
  numbers = {big.priority(int(k))[0][1:3] for k in owners}
  assert len(owners) > 25_000 and len(numbers) == len(owners)
  # the XML writes a chain as the records hold it
  record = next(r for r in records if len(r.relations) >= 2 and r.relations[1].parent_patent)
  stem = f'US{record.number}-{record.grant_date}'
  sheets = draw_sheets(sample_object(0, np.random.default_rng(0)), -1, record.noun, stem, np.random.default_rng(0))
  bib = ET.fromstring(synthetic_redbook.grant_xml(record, sheets, False)).find(BIB)
  written = [(rel.tag, r.findtext('parent-doc/document-id/doc-number'),
              r.findtext('parent-doc/parent-grant-document/document-id/date') or '',
              r.findtext('child-doc/document-id/doc-number'))
             for rel in bib.find('us-related-documents') for r in rel.findall('relation')]
  assert written == [(rel.kind, rel.parent_application, rel.parent_grant, rel.child_application)
                     for rel in record.relations]


def test_citation_shares_follow_the_stated_model(large):
  """Classify every citation from the collection's own dates, classes and families and compare the
  shares with the model's parameters where no pool runs dry (a binomial 4-sigma band)."""
  c, records = large
  number_to_index = {model.FIRST_NUMBER + k: k for k in range(c.n)}

  def ancestors(k):
    while c.parent[k] >= 0:
      k = int(c.parent[k])
      yield k

  counts = {model.EXAMINER: dict.fromkeys(model.SOURCES + ('family',), 0),
            model.APPLICANT: dict.fromkeys(model.SOURCES + ('family',), 0)}
  for k, record in enumerate(records):
    pools_full = all(len(c.pool(source, k)) >= len(record.references) + 5 for source in model.SOURCES[:-1])
    for ref in record.references:
      number = _design_number(ref.doc_number) if ref.country == 'US' else None
      j = number_to_index.get(number)
      if j is not None:
        assert c.week[j] < c.week[k], 'cited a design granted the same week or later'
        assert ref.name.split()[0] == c.inventors(j)[0].last
      if j is None:
        source = 'outside'
      elif j in ancestors(k):
        source = 'family'
        assert ref.category == model.EXAMINER and j == c.parent[k]
      else:
        assert c.root[j] != c.root[k], 'cited its own family'
        if c.effective[j] >= c.effective[k]:
          source = 'late'
          assert c.label[j] == c.label[k]
        elif c.label[j] == c.label[k]:
          source = 'article' if c.article[j] == c.article[k] else 'class'
        else:
          source = 'noise'
      assert source == ref.source
      if pools_full:
        counts[ref.category][source] += 1
  for category, shares in ((model.EXAMINER, model.EXAMINER_SHARES), (model.APPLICANT, model.APPLICANT_SHARES)):
    total = sum(v for s, v in counts[category].items() if s != 'family')
    assert total > 500
    for source, share in zip(model.SOURCES, shares):
      measured = counts[category][source] / total
      assert abs(measured - share) <= 4 * np.sqrt(share * (1 - share) / total) + 0.005, (category, source, measured)
  assert counts[model.EXAMINER]['family'] > 0


def test_impact_rows_beside_describe_the_same_patents(redbook, patents):
  out, _ = redbook
  with open(out / 'synthetic.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['id'] for r in rows] == sorted(patents)
  for row in rows:
    root = patents[row['id']]['root']
    bib = root.find(BIB)
    assert row['title'] == bib.findtext('invention-title')
    assert row['date'] == bib.findtext('publication-reference/document-id/date')
    assert row['claim'] == root.findtext('claims/claim/claim-text')
    national = [bib.findtext('classification-national/main-classification')]
    national += [e.text for e in bib.findall('classification-national/further-classification')]
    assert row['class'] == ','.join(national)
    search = ast.literal_eval(row['class_search'])
    assert search[0] == bib.findtext('classification-locarno/main-classification') and search[1] == national[0]
    assert ast.literal_eval(row['file_names']) == [img.get('file') for img in root.findall('drawings/figure/img')]
    described = [''.join(p.itertext()) for p in root.findall('description/description-of-drawings/p')
                 if p.find('figref') is not None]
    assert ast.literal_eval(row['fig_desc']) == described
    assert row['caption'].startswith(' The image is a black and white line drawing of')


@pytest.mark.parametrize('argv, message', [
    (['--layout', 'redbook', '--patents', '5', '--weeks', '9'], '--weeks must be between 1 and 5'),
    (['--layout', 'redbook', '--patents', '0'], '--patents must be between 1 and'),
    (['--patents', '120', '--weeks', '3'], '--weeks applies to --layout redbook only'),
])
def test_bad_arguments_get_a_one_line_error(argv, message, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    synthetic.main(['--out', str(tmp_path / 'out'), *argv])
  assert exit_info.value.code == 2 and message in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()


def test_red_book_ingest_reads_what_the_generator_wrote(redbook, tmp_path):
  """End to end: ``ingest --redbook`` over the weekly tars; its patents.jsonl against the generator's
  own records (ids, dates, Locarno, families, the examiner's citations of collection designs)."""
  from designclip_jax.data.ingest import ingest_redbook  # pylint: disable=import-outside-toplevel
  _, tars = redbook
  summary = ingest_redbook(tars, str(tmp_path / 'data'), image_size=32, workers=1, progress=False)
  assert summary['redbook']['grants_found_by_kind'] == {'design': N_PATENTS, 'utility': WEEKS, 'plant': WEEKS,
                                                        'reissue': WEEKS}
  assert sum(summary['patents_ingested'].values()) == N_PATENTS
  c = model.Collection(N_PATENTS, SEED, WEEKS)
  with open(tmp_path / 'data' / 'patents.jsonl') as f:
    read = {row['id']: row for row in map(json.loads, f)}
  assert sorted(read) == [c.number(k) for k in range(N_PATENTS)]
  for k in range(N_PATENTS):
    record, row = c.patent(k), read[c.number(k)]
    assert (row['grant_date'], row['filing_date']) == tuple(
        f'{d[:4]}-{d[4:6]}-{d[6:]}' for d in (record.grant_date, record.filing_date))
    assert row['locarno'] == f'{record.locarno[:2]}-{record.locarno[2:]}' and row['title'] == record.noun.capitalize()
    assert bool(row['family']) == bool(record.relations)
    cited = sorted(r['id'] for r in read.values() if r['id'] in row['cited_by_examiner'])
    assert cited == sorted(c.number(r.cited_index) for r in record.references
                           if r.cited_index >= 0 and r.category == model.EXAMINER)
    if c.parent[k] >= 0:  # a child and its parent are one family
      assert row['family_id'] == read[c.number(int(c.parent[k]))]['family_id']
