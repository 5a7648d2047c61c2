"""Red Book ingestion: grant XML of the real sample parsed against values checked by hand, the same row
record as the CSV reader, older DTD shapes, the bulk layouts (weekly tar, folders of ZIPs, per-patent
folders), bad input as report rows, resume and worker counts, family splits and the leakage count."""

import csv
import glob
import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest

from designclip_jax.data import pipeline
from designclip_jax.data.classes import locarno_code, uspc_code
from designclip_jax.data.impact import parse_row, patent_row
from designclip_jax.data.ingest import __main__ as ingest_cli
from designclip_jax.data.ingest import ingest, ingest_redbook, redbook_rows, stream
from designclip_jax.data.ingest.sources import ARCHIVE_NOT_READ
from designclip_jax.data.ingest.splits import read_split_lists, split_of
from designclip_jax.data.layout import PATENTS_FILE, RECORD_INDEX, REPORT_CSV, SPLITS
from designclip_jax.data.redbook import GrantError, caption_from_grant, document_number, parse_grant, patent_number
from tests.conftest import IMPACT_SAMPLE
from tests.ingest_cases import SMALL_GRANTS, claim_priority, copy_grant, grant_zip, weekly_tar

SIZE = 32
needs_sample = pytest.mark.skipif(not (IMPACT_SAMPLE / 'sample_data.csv').is_file(),
                                  reason=f'real IMPACT sample not found at {IMPACT_SAMPLE}')


def _grant(stem):
  with open(IMPACT_SAMPLE / stem / f'{stem}.XML', 'rb') as f:
    return parse_grant(f.read())


# ------------------------------------------------------------------------------------- normal forms

@pytest.mark.parametrize('text,code', [
    ('D28 47', 'D28/47'), ('D 2731', 'D2/731'), ('D 2728', 'D2/728'), ('D 5 32', 'D5/32'),
    (' D9727', 'D9/727'),      # a leading space shifts the 'D' (USPTO PatentPublicData's rule)
    (' D74012', 'D7/401.2'),   # 4 subclass digits: the 4th is the decimal
    ('D18  46', 'D18/4.6'),    # 'D18  41-  46' in the sample's fields of search: D18/4.1 to 4.6
    ('D14138 G', 'D14/138G'), ('2064595', '206/459.5'), ('  2102', '2/102'), ('285  6', '285/6')])
def test_uspc_normal_form(text, code):
  assert uspc_code(text) == code


def test_id_locarno_and_document_normal_forms():
  assert [patent_number(t) for t in ('D845543', 'D 0845543', 'USD845,543', 'D0907292', '4621424')] == [
      'D0845543', 'D0845543', 'D0845543', 'D0907292', '']
  assert document_number('US', 'D428532') == 'D0428532' and document_number('US', '4621424') == 'US4621424'
  assert document_number('JP', 'D 1481688') == 'JPD1481688' and document_number('EM', '007488747-0001') == \
      'EM007488747-0001'
  assert locarno_code('2803') == '28-03' and locarno_code('04-99') == '04-99'
  for bad in ('3301', '280', 'x803'):
    with pytest.raises(ValueError):
      locarno_code(bad)


# ------------------------------------------------------------------------ the real grants, by hand

# Checked by reading the XML files of ../shared/data/impact-sample (counts: grep -c of each <category>).
HAND_CHECKED = {
    'USD0907292-20210105': dict(
        grant_date='2021-01-05', filing_date='2019-02-20', locarno='28-03', locarno_edition='13', uspc=['D28/47'],
        counts={'cited by examiner': 7, 'cited by applicant': 56}, examiner=7, applicant=56,
        first_examiner='D0633254',  # <patcit num="00013"> D633254, the first cited by the examiner
        family0={'relation': 'continuation', 'application': 'US29606243', 'filing_date': '2017-06-02',
                 'patent': 'D0845543', 'child': 'US29680800'},
        priority=[{'document': 'EP13185994', 'date': '2013-09-25', 'kind': 'regional'}]),
    'USD0919622-20210518': dict(  # further class written 'D18  46'
        grant_date='2021-05-18', filing_date='2020-06-03', locarno='14-02', locarno_edition='13',
        uspc=['D14/385', 'D18/4.6'], counts={'cited by examiner': 4, 'cited by applicant': 3}, examiner=4,
        applicant=3, first_examiner='D0725655', family0=None,
        priority=[{'document': 'EM007974381', 'date': '2020-05-29', 'kind': 'regional'}]),
    'USD0909824-20210209': dict(  # further classes ' D74012' and ' D7653'; one of 9 examiner citations is literature
        grant_date='2021-02-09', filing_date='2020-06-30', locarno='07-03', locarno_edition='13',
        uspc=['D7/654', 'D7/401.2', 'D7/653'], counts={'cited by examiner': 9}, examiner=8, applicant=0,
        first_examiner='D0151600',
        family0={'relation': 'division', 'application': 'US29717097', 'filing_date': '2019-12-14',
                 'patent': 'D0889214', 'child': 'US29740061'}, priority=[]),
    'USD0908315-20210126': dict(  # its parent application was abandoned: no parent patent
        grant_date='2021-01-26', filing_date='2017-08-08', locarno='02-01', locarno_edition='13', uspc=['D2/731'],
        counts={'cited by examiner': 24}, examiner=24, applicant=0, first_examiner=None,
        family0={'relation': 'division', 'application': 'US29491516', 'filing_date': '2014-05-21', 'patent': '',
                 'child': 'US29613258'}, priority=[]),
    'USD0913313-20210316': dict(  # 50 of the applicant's 244 citations are literature
        grant_date='2021-03-16', filing_date='2019-04-22', locarno='14-04', locarno_edition='13',
        uspc=['D14/487', 'D14/490', 'D14/491', 'D14/492'],
        counts={'cited by examiner': 17, 'cited by applicant': 244}, examiner=17, applicant=194,
        first_examiner=None, family0=None, priority=[]),
}


@needs_sample
@pytest.mark.parametrize('stem', sorted(HAND_CHECKED))
def test_real_grants_parse_to_the_values_checked_by_hand(stem):
  g, want = _grant(stem), HAND_CHECKED[stem]
  assert g.patent_id == patent_number(stem[2:].split('-')[0])
  for field in ('grant_date', 'filing_date', 'locarno', 'locarno_edition', 'uspc', 'priority'):
    assert getattr(g, field) == want[field], field
  assert g.citation_counts == want['counts']
  assert (len(g.cited_by_examiner), len(g.cited_by_applicant)) == (want['examiner'], want['applicant'])
  if want['first_examiner']:
    assert g.cited_by_examiner[0] == want['first_examiner']
  assert (g.family[0] if g.family else None) == want['family0']
  assert g.notes == [] and g.dtd_version == 'v4.5 2014-04-03'


@needs_sample
def test_all_real_grants_count_citations_as_the_raw_xml_does():
  """Every sample grant against a regex over the raw bytes; the totals are protocols.md §8's."""
  totals = {}
  for path in sorted(glob.glob(str(IMPACT_SAMPLE / '*' / '*.XML'))):
    with open(path, 'rb') as f:
      data = f.read()
    g = parse_grant(data)
    citations = re.findall(rb'<us-citation>(.*?)</us-citation>', data, re.S)
    for category in ('cited by examiner', 'cited by applicant'):
      raw = [c for c in citations if f'<category>{category}</category>'.encode() in c]
      assert g.citation_counts.get(category, 0) == len(raw)
      listed = g.cited_by_examiner if category == 'cited by examiner' else g.cited_by_applicant
      assert len(listed) == sum(b'<patcit' in c for c in raw)
      totals[category] = totals.get(category, 0) + len(raw)
  assert totals == {'cited by examiner': 1194, 'cited by applicant': 2415}


@needs_sample
def test_the_xml_reader_makes_the_csv_readers_row_record_for_every_real_patent():
  """Views from description-of-drawings as from fig_desc, the same sheets, class, title, claim, Locarno."""
  with open(IMPACT_SAMPLE / 'sample_data.csv', newline='') as f:
    rows = {r['id']: parse_row(r) for r in csv.DictReader(f)}
  for path in sorted(glob.glob(str(IMPACT_SAMPLE / '*' / '*.XML'))):
    with open(path, 'rb') as f:
      g = parse_grant(f.read())
    from_csv = rows[g.patent_id]
    from_xml = patent_row(g.patent_id, g.title, g.claim, from_csv.caption, g.uspc[0], g.image_files, g.fig_desc,
                          g.no_figs, g.locarno)
    assert from_xml == from_csv, g.patent_id


def test_older_dtd_shape_reads_the_same_citations():
  """v4.0-4.2 (grants of 2005 to early 2013): references-cited/citation, and 'cited by other' for what
  v4.3+ calls 'cited by applicant'. The v4.5 file rewritten in that shape must read the same."""
  if not (IMPACT_SAMPLE / 'sample_data.csv').is_file():
    pytest.skip('real IMPACT sample not found')
  stem = 'USD0907292-20210105'
  with open(IMPACT_SAMPLE / stem / f'{stem}.XML', encoding='utf-8') as f:
    xml = f.read()
  old = (xml.replace('us-patent-grant-v45-2014-04-03.dtd', 'us-patent-grant-v42-2006-08-23.dtd')
         .replace('dtd-version="v4.5 2014-04-03"', 'dtd-version="v4.2 2006-08-23"')
         .replace('us-references-cited>', 'references-cited>').replace('<us-citation>', '<citation>')
         .replace('</us-citation>', '</citation>').replace('cited by applicant', 'cited by other')
         .replace('us-parties>', 'parties>').replace('us-applicants>', 'applicants>'))
  assert '<us-citation>' not in old and 'cited by other' in old
  new, older = parse_grant(xml.encode()), parse_grant(old.encode())
  assert (older.cited_by_examiner, older.cited_by_applicant) == (new.cited_by_examiner, new.cited_by_applicant)
  assert older.citation_counts == {'cited by examiner': 7, 'cited by other': 56}
  assert (older.uspc, older.locarno, older.family, older.priority) == (new.uspc, new.locarno, new.family, new.priority)


def test_bad_grant_xml_is_one_reason():
  with pytest.raises(GrantError, match='grant XML does not parse'):
    parse_grant(b'<us-patent-grant><us-bibliographic-data-grant>')
  utility = b'''<us-patent-grant><us-bibliographic-data-grant><publication-reference><document-id><country>US</country>
      <doc-number>10881234</doc-number><kind>B2</kind><date>20210105</date></document-id></publication-reference>
      </us-bibliographic-data-grant></us-patent-grant>'''
  with pytest.raises(GrantError, match='not a design patent: 10881234 kind B2'):
    parse_grant(utility)
  with pytest.raises(GrantError, match='ST.32'):
    parse_grant(b'<PATDOC><SDOBI/></PATDOC>')


@needs_sample
def test_locarno_problems_are_noted_and_the_grant_kept():
  stem = 'USD0907292-20210105'
  xml = (IMPACT_SAMPLE / stem / f'{stem}.XML').read_text(encoding='utf-8')
  cases = {'<edition>13</edition>': ('<edition>99</edition>', '28-03', "unknown Locarno edition: '99'"),
           '<main-classification>2803</main-classification>': (
               '<main-classification>3301</main-classification>', '', 'unreadable Locarno class'),
           '<classification-locarno>': ('<classification-national-old>', '', 'no Locarno class in the XML')}
  for old, (new, locarno, note) in cases.items():
    edited = xml.replace(old, new, 1)
    if old == '<classification-locarno>':
      edited = edited.replace('</classification-locarno>', '</classification-national-old>', 1)
    g = parse_grant(edited.encode())
    assert g.locarno == locarno and len(g.notes) == 1 and g.notes[0].startswith(note), g.notes
    assert g.patent_id == 'D0907292' and g.uspc == ['D28/47']


def test_caption_rule():
  fig_desc = ['FIG. 1 is a front perspective view of a cup;', 'FIG. 2 is a rear view thereof;',
              'FIG. 3 is a cross-sectional view taken along line 3-3;', 'FIG. 4 is a front view thereof.']
  assert caption_from_grant('Cup', 'I claim the ornamental design for a cup, as shown and described.', fig_desc) == \
      'The ornamental design for a cup. Views: perspective, rear, front.'
  assert caption_from_grant('Wheel', '', []) == 'A design of a wheel.'


# ----------------------------------------------------------------------------------- ingestion

def _small_folders(root, stems=SMALL_GRANTS):
  """Per-patent folders of a few real grants (the sample's own layout), copied under ``root``."""
  os.makedirs(root)
  for stem in stems:
    shutil.copytree(IMPACT_SAMPLE / stem, os.path.join(root, stem))
  return root


def _records(out):
  """Every record by patent id, with its split."""
  with open(os.path.join(out, 'ingest_report.json')) as f:
    present = [s for s, n in json.load(f)['patents_ingested'].items() if n]
  return {r['patent_id']: (split, r) for split in present for r in pipeline.eval_records(out, split)}


def _dataset_bytes(out):
  digest = {}
  for path in sorted(glob.glob(os.path.join(pipeline.dataset_dir(out), '*'))) + [os.path.join(out, PATENTS_FILE)]:
    with open(path, 'rb') as f:
      digest[os.path.basename(path)] = hashlib.sha256(f.read()).hexdigest()
  for split in SPLITS:
    if os.path.exists(os.path.join(out, RECORD_INDEX.format(split=split))):
      with np.load(os.path.join(out, RECORD_INDEX.format(split=split))) as z:
        digest[split] = {k: z[k].tolist() for k in z.files}
  return digest


def _report(out):
  with open(os.path.join(out, REPORT_CSV), newline='') as f:
    return [(r['patent_id'], r['action'], r['reason']) for r in csv.DictReader(f)]


@pytest.fixture(scope='module')
def small_reference(tmp_path_factory):
  """The small grants from per-patent folders, one worker, one grant per block."""
  if not (IMPACT_SAMPLE / 'sample_data.csv').is_file():
    pytest.skip('real IMPACT sample not found')
  root = tmp_path_factory.mktemp('small')
  folders = _small_folders(str(root / 'folders'))
  out = str(root / 'out')
  ingest_redbook([folders], out, image_size=SIZE, workers=1, rows_per_shard=1, progress=False)
  return folders, out


def test_weekly_tar_zip_folders_give_the_per_patent_folder_records_whatever_the_worker_count(small_reference,
                                                                                               tmp_path):
  folders, reference = small_reference
  stems = sorted(os.listdir(folders))
  tar = str(tmp_path / 'I20210105.tar')
  weekly_tar(tar, [os.path.join(folders, s) for s in stems[:2]])
  zips = tmp_path / 'zips' / 'nested' / 'deeper'
  zips.mkdir(parents=True)
  (zips / f'{stems[2]}.ZIP').write_bytes(grant_zip(os.path.join(folders, stems[2])))
  out = str(tmp_path / 'out')
  summary = ingest_redbook([tar, str(tmp_path / 'zips')], out, image_size=SIZE, workers=2, rows_per_shard=1,
                           progress=False)
  assert _dataset_bytes(out) == _dataset_bytes(reference)
  assert summary['redbook']['grants_found_by_kind'] == {'design': 3, 'utility': 1, 'plant': 1, 'reissue': 1}
  assert summary['rows_read'] == 3 and _report(out) == _report(reference)


@pytest.mark.parametrize('stage', ['scan', 'decode'])
def test_a_killed_redbook_ingest_resumes_to_the_same_bytes(stage, small_reference, tmp_path, monkeypatch):
  """Killed in the scan of the XML or in the decoding of the drawings, after the first block is done."""
  folders, reference = small_reference
  out = str(tmp_path / 'out')
  module, name, finished = {'scan': (redbook_rows, 'scan_grant', 'scan-000000.json'),
                            'decode': (stream, 'process_row', 'block-000000.json')}[stage]
  real = getattr(module, name)
  calls = []

  def dies_on_the_third_grant(item):
    calls.append(item)
    if len(calls) == 3:
      raise KeyboardInterrupt  # as a kill: the second block is unfinished
    return real(item)

  monkeypatch.setattr(module, name, dies_on_the_third_grant)
  with pytest.raises(KeyboardInterrupt):
    ingest_redbook([folders], out, image_size=SIZE, workers=1, rows_per_shard=1, progress=False)
  work = os.path.join(out, '.ingest_work')
  assert sorted(f for f in os.listdir(work) if f.startswith(finished[:5]) and f.endswith('.json')) == [finished]
  monkeypatch.setattr(module, name, real)
  ingest_cli.main(['--redbook', folders, '--out', out, '--image-size', str(SIZE), '--workers', '1',
                   '--rows-per-shard', '1'])
  assert _dataset_bytes(out) == _dataset_bytes(reference)


def test_captions_come_from_the_csv_where_it_has_the_patent_else_from_the_grant(small_reference, tmp_path):
  """And then the records are the CSV reader's, field by field (the family id aside: a CSV has none)."""
  folders, _ = small_reference
  ids = {s[2:].split('-')[0] for s in SMALL_GRANTS}
  with open(IMPACT_SAMPLE / 'sample_data.csv', newline='') as f:
    rows = [r for r in csv.DictReader(f) if r['id'] in ids]
  with_row = sorted(r['id'] for r in rows)[:2]
  small_csv = tmp_path / 'small.csv'
  with open(small_csv, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(r for r in rows if r['id'] in with_row)
  from_csv, from_xml = str(tmp_path / 'csv'), str(tmp_path / 'xml')
  ingest(str(small_csv), str(IMPACT_SAMPLE), from_csv, image_size=SIZE, workers=1, progress=False)
  summary = ingest_redbook([folders], from_xml, csv_pattern=str(small_csv), image_size=SIZE, workers=1,
                           progress=False)
  assert summary['redbook']['captions'] == {'impact_csv': 2, 'built_from_grant_xml': 1}
  csv_records, xml_records = _records(from_csv), _records(from_xml)
  for pid, (_, record) in xml_records.items():
    if pid in with_row:
      _, expected = csv_records[pid]
      assert {k: v for k, v in record.items() if k != 'index'} == {k: v for k, v in expected.items() if k != 'index'}
    else:
      g = _grant(next(s for s in SMALL_GRANTS if pid in s))
      assert record['caption'] == caption_from_grant(g.title, g.claim, g.fig_desc)


def test_bad_grants_are_report_rows_and_other_kinds_are_counted(small_reference, tmp_path):
  folders, _ = small_reference
  root = tmp_path / 'in'
  shutil.copytree(folders, root)
  stem = SMALL_GRANTS[0]
  no_locarno = copy_grant(str(root / stem), str(root), '0999001',
                          lambda x: re.sub(r'<classification-locarno>.*?</classification-locarno>', '', x, flags=re.S))
  odd_edition = copy_grant(str(root / stem), str(root), '0999002', lambda x: x.replace('<edition>13</edition>',
                                                                                        '<edition>99</edition>'))
  broken = copy_grant(str(root / stem), str(root), '0999003', lambda x: x[:len(x) // 2])
  empty_zip = root / 'USD0999004-20210209.ZIP'
  empty_zip.write_bytes(_zip_without_xml())
  (root / 'USPP032712-20210105.XML').write_text('<us-patent-grant/>')  # a plant grant, unpacked
  (root / '2021.zip').write_bytes(_zip_without_xml())  # an archive not named as a grant: counted, not read
  shutil.copytree(root / stem, tmp_path / 'again' / stem)  # the same patent a second time
  out = str(tmp_path / 'out')
  summary = ingest_redbook([str(root), str(tmp_path / 'again')], out, image_size=SIZE, workers=1, progress=False)
  report = {(pid, action, reason.split(':')[0]) for pid, action, reason in _report(out)}
  assert report == {('D0999001', 'noted', 'no Locarno class in the XML'),
                    ('D0999002', 'noted', 'unknown Locarno edition'),
                    ('D0999003', 'skipped', 'grant XML does not parse'),
                    ('D0999004', 'skipped', 'no grant XML (USD<number>-<date>.XML) in the part'),
                    ('D0910059', 'skipped', f'duplicate id (first seen at {stem}.XML row 2)')}, report
  assert summary['rows_skipped'] == 3 and summary['records_without_locarno'] == 1
  assert summary['redbook']['grants_found_by_kind'] == {'design': 8, 'plant': 1, ARCHIVE_NOT_READ: 1}
  with open(os.path.join(out, PATENTS_FILE)) as f:
    patents = {p['id']: p for p in map(json.loads, f)}
  assert sorted(patents) == sorted(['D0910059', 'D0913312', 'D0937858', 'D0999001', 'D0999002'])
  assert patents['D0999001']['locarno'] == '' and patents['D0999002']['locarno_edition'] == '99'
  assert broken and odd_edition and no_locarno


def _zip_without_xml():
  import io
  import zipfile
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as zf:
    zf.writestr('USD0999004-20210209/USD0999004-20210209-D00000.TIF', b'')
  return buffer.getvalue()


# ----------------------------------------------------------------------------- families and splits

def _family_of_copies(root, count=6):
  """D0910059 and ``count`` copies (identical drawings), all claiming one priority: one family. Numbers
  are taken in order until the id-hash split would put the family in at least two splits."""
  os.makedirs(root)
  stem = SMALL_GRANTS[0]
  priority = claim_priority('DE402020001234', '20180910')
  copy_grant(str(IMPACT_SAMPLE / stem), root, stem[3:10], priority)  # the original, with the priority claim
  numbers = [f'{n:07d}' for n in range(998001, 998001 + count)]
  for number in numbers:
    copy_grant(os.path.join(root, f'USD{stem[3:10]}-20210209'), root, number)
  ids = ['D' + stem[3:10]] + [f'D{n}' for n in numbers]
  assert len({split_of(i) for i in ids}) > 1, 'the id-hash split must straddle this family for the test to bite'
  return ids


def _splits_of(out):
  return {pid: split for pid, (split, _) in _records(out).items()}


@needs_sample
def test_a_family_never_straddles_splits_where_the_id_hash_split_would(tmp_path):
  ids = _family_of_copies(str(tmp_path / 'family'))
  out = str(tmp_path / 'out')
  summary = ingest_redbook([str(tmp_path / 'family')], out, image_size=SIZE, workers=1, progress=False)
  splits = _splits_of(out)
  assert sorted(splits) == sorted(ids)
  assert len(set(splits.values())) == 1, f'the family straddles splits: {splits}'
  assert set(splits.values()) == {split_of('DE402020001234')}  # the family id: its earliest document
  for split in SPLITS:
    path = os.path.join(out, RECORD_INDEX.format(split=split))
    if os.path.exists(path):
      with np.load(path) as z:
        assert set(z['family']) == {'DE402020001234'} and set(z['locarno']) == {'14-04'}
  assert summary['leakage_across_splits'] == {'families_in_several_splits': 0, 'records_of_those_families': 0,
                                              'drawings_in_several_splits': 0, 'copies_of_those_drawings': 0}
  assert summary['split_rule'].startswith('family id hash')


@needs_sample
def test_split_files_are_followed_and_the_leakage_they_cause_is_counted(tmp_path):
  ids = _family_of_copies(str(tmp_path / 'family'), count=3)
  lists = {'train': ids[:2], 'test': ids[2:3]}  # ids[3] is in no list
  for split, members in lists.items():
    (tmp_path / f'{split}.txt').write_text('\n'.join(m.replace('D0', 'D ') for m in members) + '\n')
  out = str(tmp_path / 'out')
  ingest_cli.main(['--redbook', str(tmp_path / 'family'), '--out', out, '--image-size', str(SIZE), '--workers', '1',
                   '--split-file', f'train={tmp_path / "train.txt"}', '--split-file', f'test={tmp_path / "test.txt"}'])
  assert _splits_of(out) == {i: s for s, members in lists.items() for i in members}
  assert (ids[3], 'skipped', 'not in any --split-file list') in _report(out)
  # the leakage, counted here by brute force over the records
  records = _records(out)
  by_drawing = {}
  for split, record in records.values():
    for png in record['images']:
      by_drawing.setdefault(hashlib.sha256(png).hexdigest(), []).append(split)
  crossing = [splits for splits in by_drawing.values() if len(set(splits)) > 1]
  with open(os.path.join(out, 'ingest_report.json')) as f:
    leakage = json.load(f)['leakage_across_splits']
  assert leakage == {'families_in_several_splits': 1, 'records_of_those_families': 3,
                     'drawings_in_several_splits': len(crossing), 'copies_of_those_drawings': sum(map(len, crossing))}
  assert crossing, 'the copies share their drawings'


@pytest.mark.parametrize('kind', ['missing path', 'not a Red Book input', 'not an IMPACT CSV', 'bad split list'])
def test_bad_redbook_arguments_are_one_line_errors_before_any_work(kind, tmp_path):
  folder = tmp_path / 'grants'
  folder.mkdir()
  (tmp_path / 'notes.txt').write_text('hello')
  (tmp_path / 'other.csv').write_text('name,value\na,1\n')
  (tmp_path / 'test.txt').write_text('D0907292\nnot an id\n')
  args, named = {'missing path': (['--redbook', str(tmp_path / 'nowhere')], tmp_path / 'nowhere'),
                 'not a Red Book input': (['--redbook', str(tmp_path / 'notes.txt')], tmp_path / 'notes.txt'),
                 'not an IMPACT CSV': (['--redbook', str(folder), '--csv', str(tmp_path / 'other.csv')],
                                       tmp_path / 'other.csv'),
                 'bad split list': (['--redbook', str(folder), '--split-file', f'test={tmp_path / "test.txt"}'],
                                    f'{tmp_path / "test.txt"} line 2')}[kind]
  with pytest.raises(SystemExit) as e:
    ingest_cli.main(args + ['--out', str(tmp_path / 'out')])
  message = str(e.value)
  assert message.startswith('error: ') and str(named) in message and '\n' not in message
  assert not (tmp_path / 'out').exists()


def test_split_lists_refuse_a_patent_in_two_lists(tmp_path):
  (tmp_path / 'a.txt').write_text('D0907292\nD845543\n')
  (tmp_path / 'b.txt').write_text('D0845543\n')
  with pytest.raises(Exception, match=r'b.txt line 1: D0845543 is also in the train list'):
    read_split_lists({'train': str(tmp_path / 'a.txt'), 'test': str(tmp_path / 'b.txt')})


# ------------------------------------------------------------------------ the synthetic Red Book

def test_synthetic_red_book_end_to_end_families_as_the_generator_made_them(tmp_path):
  """The generator's weekly tars and IMPACT rows through ``ingest --redbook --csv``: two patents share a
  family id exactly when the generator rooted them in one family, no family straddles splits (the
  id-hash split would have), records and patents.jsonl agree, captions are the CSV's."""
  from designclip_jax.data import synthetic_redbook  # pylint: disable=import-outside-toplevel
  from designclip_jax.data.synthetic_collection import Collection  # pylint: disable=import-outside-toplevel
  n, seed, weeks = 60, 2, 4
  tars = synthetic_redbook.generate(str(tmp_path / 'raw'), n, seed, weeks, workers=1, progress=False)
  out = str(tmp_path / 'data')
  summary = ingest_redbook(tars, out, csv_pattern=str(tmp_path / 'raw' / 'synthetic.csv'), image_size=SIZE,
                           workers=1, progress=False)
  assert summary['rows_read'] == n and summary['redbook']['captions'] == {'impact_csv': n}
  c = Collection(n, seed, weeks)
  with open(os.path.join(out, PATENTS_FILE)) as f:
    family = {p['id']: p['family_id'] for p in map(json.loads, f)}
  root = {c.number(k): int(c.root[k]) for k in range(n)}
  pairs = [(a, b) for a in family for b in family if a < b]
  assert all((family[a] == family[b]) == (root[a] == root[b]) for a, b in pairs)
  assert any(root[a] == root[b] and split_of(a) != split_of(b) for a, b in pairs), 'the id split would straddle'
  records = _records(out)
  assert {pid: r['caption'] for pid, (_, r) in records.items()} == _csv_captions(tmp_path / 'raw' / 'synthetic.csv')
  split_of_family = {}
  for pid, (split, _) in records.items():
    assert split_of_family.setdefault(family[pid], split) == split, f'family {family[pid]} straddles splits'
  assert summary['leakage_across_splits']['families_in_several_splits'] == 0
  for split in SPLITS:
    with np.load(os.path.join(out, RECORD_INDEX.format(split=split))) as z:
      assert [family[p] for p in z['patent_id']] == list(z['family'])


def _csv_captions(path):
  with open(path, newline='') as f:
    return {r['id']: r['caption'].strip() for r in csv.DictReader(f)}  # stripped, as the CSV reader does
