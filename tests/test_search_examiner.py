"""An examiner's search on a synthetic Red Book set generated, ingested and indexed here: the index's dates, Locarno
codes and families against the set's patents.jsonl; a query by patent end to end (its cut-off and family, its hits
against the float64 brute force of tests.search_helpers); a queries file run on one model load, whose records
equal the queries run one by one; the records' fields; the report's other views and families; and the page
keeping its uploaded drawing when a search is refined, in a real (headless) Chromium. Ranking quality is not the
point: the model is an untrained tiny tower."""

import datetime
import hashlib
import json
import os

import numpy as np
import pytest

from designclip_jax.data import images as image_ops
from designclip_jax.data import synthetic_redbook
from designclip_jax.data.ingest import ingest_redbook
from designclip_jax.search import index as index_lib
from designclip_jax.search.__main__ import main
from designclip_jax.search.catalog import MAX_OTHER_VIEWS
from designclip_jax.search.query import Searcher
from tests.eval_helpers import tiny_clip_dir
from tests.search_helpers import chromium_page, one_line_error, post_form, reference_ranking, serving

N, SEED, WEEKS = 40, 3, 4


# -- a synthetic Red Book set, generated, ingested and indexed here --------------------------------------------

@pytest.fixture(scope='module')
def redbook(tmp_path_factory):
  root = tmp_path_factory.mktemp('examiner')
  tars = synthetic_redbook.generate(str(root / 'raw'), N, SEED, WEEKS, workers=1, progress=False)
  data = str(root / 'data')
  ingest_redbook(tars, data, image_size=32, workers=1, tokenizer_vocab=300, context_length=32, progress=False)
  model = tiny_clip_dir(str(root / 'model'), data)
  index = str(root / 'index')
  main(['index', '--checkpoint', model, '--data', data, '--out', index, '--records-per-shard', '16'])
  with open(os.path.join(data, 'patents.jsonl')) as f:
    patents = {p['id']: p for p in map(json.loads, f)}
  loaded = index_lib.load(index)
  return dict(root=root, data=data, model=model, index=index, patents=patents, meta=loaded.meta,
              vectors=loaded.vectors, manifest=loaded.manifest)


def _effective(patent: dict) -> str:
  """35 U.S.C. 100(i): the earliest claimed priority date, else the filing date (ISO strings compare as dates)."""
  return min([c['date'] for c in patent['priority'] if c['date']] + [patent['filing_date']])


def _family(patents, patent_id) -> list:
  return sorted(p for p in patents if patents[p]['family_id'] == patents[patent_id]['family_id'])


def _patent_vector(redbook, patent_id):
  """Its drawings' stored vectors but the front page (a repeat of one sheet), as unit vectors averaged, float64."""
  meta = redbook['meta']
  rows = (meta['patent_id'] == patent_id) & (meta['kind'] == 'drawing') & (meta['image'] != 0)
  views = redbook['vectors'][rows].astype(np.float64)
  mean = (views / np.linalg.norm(views, axis=1, keepdims=True)).mean(axis=0)
  return mean / np.linalg.norm(mean)


def _check_record(record, redbook, started):
  """The fields that make a record fit to be filed: when, which model, which index."""
  with open(os.path.join(redbook['index'], index_lib.INDEX_FILE), 'rb') as f:
    index_sha = hashlib.sha256(f.read()).hexdigest()
  when = datetime.datetime.strptime(record['time'], '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=datetime.timezone.utc)
  assert started - datetime.timedelta(seconds=1) <= when <= datetime.datetime.now(datetime.timezone.utc)
  assert record['record'] == 'designclip_jax prior-art search' and record['version'] == 1
  assert record['model']['fingerprint'] == redbook['manifest'].model['fingerprint']
  assert record['index'] == {'index_json_sha256': index_sha, 'rows': len(redbook['vectors']), 'patents': N,
                             'sources': [{'kind': 'ingested', 'name': 'data', 'patent_fields': [
                                 'grant_date', 'effective_filing_date', 'locarno', 'family_id']}]}
  patents = redbook['patents']
  for hit in record['hits']:
    p = patents[hit['patent_id']]
    assert (hit['locarno'], hit['grant_date'], hit['family_id']) == (p['locarno'], p['grant_date'], p['family_id'])
    assert hit['effective_filing_date'] == _effective(p)
    assert hit['family_in_index'] == [q for q in _family(patents, hit['patent_id']) if q != hit['patent_id']]


def test_index_holds_each_patents_dates_locarno_and_family(redbook):
  meta, patents = redbook['meta'], redbook['patents']
  for row, patent_id in enumerate(meta['patent_id']):
    p = patents[patent_id]
    assert str(meta['effective_filing_date'][row]) == _effective(p) and str(meta['grant_date'][row]) == p['grant_date']
    assert meta['locarno'][row] == p['locarno'] and meta['family_id'][row] == p['family_id']
  assert any(_effective(p) < p['filing_date'] for p in patents.values())  # priority claims decide some cut-offs
  assert redbook['manifest'].datasets[0]['patent_fields'] == ['grant_date', 'effective_filing_date', 'locarno',
                                                              'family_id']


def _one_line_error(capsys, argv, expected):
  one_line_error(capsys, main, argv, expected)


def test_query_by_patent(redbook, tmp_path, capsys):
  """--patent: its drawings the query, its family left out, the cut-off its effective filing date (a priority
  date where it claims one) or each --before date; the hits and the number of patents searched are the
  reference's, and every record is complete."""
  patents, meta, index = redbook['patents'], redbook['meta'], redbook['index']
  query = next(p for p in sorted(patents) if patents[p]['family'] and len(_family(patents, p)) > 1)
  family, cutoff = _family(patents, query), _effective(patents[query])
  started = datetime.datetime.now(datetime.timezone.utc)
  out = tmp_path / 'record.json'
  main(['query', '--index', index, '--patent', query, '--top', str(N), '--json', str(out)])
  record = json.loads(out.read_text())
  ids, scores, passing = reference_ranking(meta, redbook['vectors'], _patent_vector(redbook, query), N, before=cutoff,
                                    family=patents[query]['family_id'])
  assert [h['patent_id'] for h in record['hits']] == ids and len(ids) == passing
  np.testing.assert_allclose([h['score'] for h in record['hits']], scores, rtol=1e-5, atol=1e-6)
  assert record['patents_searched'] == passing == sum(_effective(p) < cutoff and p['id'] not in family
                                                      for p in patents.values())
  assert record['query'] == {'patent': query, 'top': N, 'target': 'drawings'}
  assert record['filters'] == {'before': cutoff, 'before_from': "query patent's effective filing date", 'locarno': [],
                               'class': [], 'target': 'drawings', 'family_left_out': [query] + [
                                   p for p in family if p != query]}
  _check_record(record, redbook, started)
  assert f'patent {query}, before {cutoff}: {passing} patents searched' in capsys.readouterr().out

  dates, locarno = ['2021-01-01', '2020-06-01'], patents[ids[0]]['locarno'][:2]
  main(['query', '--index', index, '--patent', query.replace('D0', 'D '), '--before', ','.join(dates), '--locarno',
        locarno, '--json', str(out)])
  records = json.loads(out.read_text())
  assert [r['filters']['before'] for r in records] == dates and len(records) == 2
  for date, record in zip(dates, records):
    ids, _, passing = reference_ranking(meta, redbook['vectors'], _patent_vector(redbook, query), 20, before=date,
                                 locarno=(locarno,), family=patents[query]['family_id'])
    assert [h['patent_id'] for h in record['hits']] == ids and record['patents_searched'] == passing
    assert record['filters']['before_from'] == 'given' and record['filters']['locarno'] == [locarno]

  claimed = next(p for p in sorted(patents) if _effective(patents[p]) < patents[p]['filing_date'])
  main(['query', '--index', index, '--patent', claimed, '--json-lines', str(out)])
  record = json.loads(out.read_text())
  assert record['filters']['before'] == patents[claimed]['priority'][0]['date'] < patents[claimed]['filing_date']
  assert all(h['effective_filing_date'] < record['filters']['before'] for h in record['hits'])

  for argv, expected in [(['--patent', 'D0999999'], f"patent 'D0999999' is not in index {index} ({N} patents)"),
                         (['--patent', query, '--before', '2999-01-01'], '--before 2999-01-01 is in the future'),
                         (['--patent', query, '--before', '2020-02-30'], "--before '2020-02-30' is not a date"),
                         (['--patent', query, '--text', 'a chair'], 'a query by patent takes no drawings or words'),
                         (['--patent', query, '--locarno', '33'], "--locarno '33' is not a Locarno class")]:
    _one_line_error(capsys, ['query', '--index', index] + argv, expected)


def test_report_shows_each_hits_other_views_and_family(redbook, tmp_path):
  """The report of a query by patent: its drawings as the query; for every hit its drawing, its other drawings
  (the patent's sheets but the front page and the matched one) and the patents of its family in the index."""
  patents, meta = redbook['patents'], redbook['meta']
  query = next(p for p in sorted(patents) if patents[p]['family'] and len(_family(patents, p)) > 1)
  out, page = tmp_path / 'record.json', tmp_path / 'report.html'
  main(['query', '--index', redbook['index'], '--patent', query, '--top', str(N), '--json', str(out), '--report',
        str(page)])
  record, html = json.loads(out.read_text()), page.read_text()
  own = (meta['patent_id'] == query) & (meta['kind'] == 'drawing') & (meta['image'] != 0)
  assert html.count('alt="query drawing') == own.sum() > 1
  cards = html.split('<li class="hit">')[1:]
  assert len(cards) == len(record['hits'])
  families = 0
  for hit, card in zip(record['hits'], cards):
    assert card.count('src="data:image/png;base64,') == 1 + card.count('alt="other view') and 'http' not in card
    split, number, image = hit['drawing'].split(':')
    sheets = (meta['patent_id'] == hit['patent_id']) & (meta['kind'] == 'drawing') & (meta['image'] != 0)
    assert card.count('alt="other view') == min(sheets.sum() - (int(image) != 0), MAX_OTHER_VIEWS), hit
    if hit['family_in_index']:
      families += 1
      assert f'family: {", ".join(hit["family_in_index"])}' in card
    else:
      assert 'family:' not in card
  assert families  # another family's patent is among the hits
  embedded = html.split('<script type="application/json" class="record">')[1].split('</script>')[0]
  assert json.loads(embedded)['hits'] == record['hits']


def _query_drawing(redbook, tmp_path) -> str:
  """A test patent's FIG. 1 sheet as a PNG file (a query drawing from outside the index's files)."""
  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  sheet = next(pipeline.eval_records(redbook['data'], 'test'))['images'][1]
  path = tmp_path / 'fig1.png'
  image_ops.decode_png(sheet)  # a readable sheet
  path.write_bytes(sheet)
  return str(path)


def test_queries_file_runs_on_one_model_load_and_each_line_is_a_record(redbook, tmp_path, monkeypatch):
  """Two lines (a patent with a Locarno class; a drawing with words, a cut-off and two USPC classes) -> two
  records, with one model load; each record equals the same query run alone."""
  from designclip_jax.weights import loader
  patents = redbook['patents']
  query = next(p for p in sorted(patents) if patents[p]['family'] and len(_family(patents, p)) > 1)
  drawing = _query_drawing(redbook, tmp_path)
  locarno = sorted(p['locarno'][:2] for p in patents.values())[len(patents) // 2]
  lines = [{'id': 'by-patent', 'patent': query, 'locarno': locarno},
           {'id': 'by-drawing', 'images': [os.path.basename(drawing)], 'text': 'a chair', 'before': '2021-01-01',
            'class': 'D6, d7', 'top': 5, 'target': 'all'}]
  queries, out = tmp_path / 'queries.jsonl', tmp_path / 'records.jsonl'
  queries.write_text('\n'.join(json.dumps(line) for line in lines) + '\n\n')
  loads = []
  monkeypatch.setattr(loader, 'load_model', lambda *a, real=loader.load_model, **k: loads.append(a) or real(*a, **k))
  started = datetime.datetime.now(datetime.timezone.utc)
  main(['query', '--index', redbook['index'], '--queries', str(queries), '--json-lines', str(out)])
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(records) == 2 and len(loads) == 1
  by_patent, by_drawing = records
  with open(drawing, 'rb') as f:
    sha = hashlib.sha256(f.read()).hexdigest()
  assert by_patent['query'] == {'id': 'by-patent', 'patent': query, 'top': 20, 'target': 'drawings'}
  assert by_patent['filters']['locarno'] == [locarno] and by_patent['filters']['before'] == _effective(patents[query])
  assert by_drawing['query'] == {'id': 'by-drawing', 'images': [{'name': 'fig1.png', 'sha256': sha}], 'text': 'a chair',
                                 'top': 5, 'target': 'all'}
  assert by_drawing['filters'] == {'before': '2021-01-01', 'before_from': 'given', 'locarno': [], 'class': ['D6', 'D7'],
                                   'target': 'all'}
  assert all(h['locarno'][:2] == locarno for h in by_patent['hits']) and len(by_drawing['hits']) <= 5
  assert all(h['class'] in ('D6', 'D7') and h['effective_filing_date'] < '2021-01-01' for h in by_drawing['hits'])
  for record in records:
    _check_record(record, redbook, started)
  alone = tmp_path / 'alone.json'
  main(['query', '--index', redbook['index'], '--patent', query, '--locarno', locarno, '--json', str(alone)])
  single = json.loads(alone.read_text())
  assert [h['patent_id'] for h in single['hits']] == [h['patent_id'] for h in by_patent['hits']]
  np.testing.assert_allclose([h['score'] for h in single['hits']], [h['score'] for h in by_patent['hits']], atol=1e-6)
  main(['query', '--index', redbook['index'], '--image', drawing, '--text', 'a chair', '--before', '2021-01-01',
        '--class', 'D6', '--class', 'D7', '--top', '5', '--target', 'all', '--json', str(alone)])
  single = json.loads(alone.read_text())
  assert [h['patent_id'] for h in single['hits']] == [h['patent_id'] for h in by_drawing['hits']]
  np.testing.assert_allclose([h['score'] for h in single['hits']], [h['score'] for h in by_drawing['hits']], atol=1e-6)


def test_queries_file_errors_name_the_line(redbook, tmp_path, capsys):
  queries = tmp_path / 'q.jsonl'
  for line, expected in [('{"patent": "D0700001", "befor": "2020-01-01"}',
                          f'{queries} line 2: unknown key(s) befor; a query takes id, patent, images'),
                         ('{"images": ["nowhere.png"]}',
                          f'{queries} line 2: query image {tmp_path}/nowhere.png does not'),
                         ('{"patent": "D0700001", "locarno": ["28", 6]}',
                          f'{queries} line 2: locarno must be a string'),
                         ('{"patent": "D0700001", "top": 0}', f'{queries} line 2: top must be at least 1, got 0'),
                         ('{"text": "a chair", "before": "2020-1-1"}', f"{queries} line 2: before '2020-1-1' is not a"),
                         ('["D0700001"]', f'{queries} line 2: a query is a JSON object, got list'),
                         ('{"patent": "D0700001"', f'{queries} line 2: not JSON')]:
    queries.write_text('{"patent": "D0700001"}\n' + line + '\n')
    _one_line_error(capsys, ['query', '--index', redbook['index'], '--queries', str(queries), '--json-lines',
                             str(tmp_path / 'out.jsonl')], expected)
  _one_line_error(capsys, ['query', '--index', redbook['index'], '--queries', str(queries), '--locarno', '28'],
                  '--queries takes each query\'s drawings, words and filters from its lines; drop --locarno')


@pytest.fixture(scope='module')
def server(redbook):
  with serving(Searcher(redbook['index'])) as url:
    yield url


def test_page_keeps_the_uploaded_drawing_when_a_search_is_refined(redbook, server, tmp_path):
  """In Chromium: upload a drawing and search; then change the Locarno filter only and search again. The second
  search's record holds the same drawing (name and SHA-256) and the new filter, every hit is of that class, the
  file input still holds the drawing, and every hit's drawing and other views load from the server."""
  drawing = _query_drawing(redbook, tmp_path)
  with open(drawing, 'rb') as f:
    sha = hashlib.sha256(f.read()).hexdigest()
  classes = sorted(p['locarno'][:2] for p in redbook['patents'].values())
  locarno = max(set(classes), key=classes.count)
  record = lambda page: json.loads(page.eval_on_selector('script.record', 'e => e.textContent'))
  with chromium_page() as page:
    page.goto(server)
    page.set_input_files('#images', drawing)
    page.click('#search')
    page.wait_for_selector('.hits')
    first = record(page)
    page.fill('input[name=locarno]', locarno)
    page.click('#search')
    page.wait_for_function('() => JSON.parse(document.querySelector("script.record").textContent)'
                           '.filters.locarno.length === 1')
    second = record(page)
    files = page.eval_on_selector('#images', 'e => Array.from(e.files).map(f => f.name)')
    shown = page.locator('.query img').count()
    page.wait_for_function('() => Array.from(document.querySelectorAll(".hit > img"))'
                           '.every(i => i.complete && i.naturalWidth > 0)')
    views = page.locator('.views img').count()
    page.locator('.views img').last.scroll_into_view_if_needed()  # other views load lazily, when shown
    page.wait_for_function('() => Array.from(document.querySelectorAll(".views img")).at(-1).naturalWidth > 0')
    page.screenshot(path=str(os.environ.get('DESIGNCLIP_EXAMINER_SCREENSHOT', tmp_path / 'refined.png')),
                    full_page=True)
  assert first['query']['images'] == second['query']['images'] == [{'name': 'fig1.png', 'sha256': sha}]
  assert first['filters']['locarno'] == [] and second['filters']['locarno'] == [locarno]
  assert second['hits'] and all(h['locarno'][:2] == locarno for h in second['hits'])
  assert len(first['hits']) > len(second['hits']) and 'source' not in second['hits'][0]
  assert files == ['fig1.png'] and shown == 1 and views > 0


def test_api_answers_search_records_with_the_new_filters(redbook, server):
  """POST /api/search by patent with two cut-offs and a Locarno class: two records (each the reference's hits),
  naming no path of the server; a bad date, too many dates and an unknown patent: HTTP 400 with one line."""
  patents, meta = redbook['patents'], redbook['meta']
  query = next(p for p in sorted(patents) if patents[p]['family'] and len(_family(patents, p)) > 1)
  locarno = patents[query]['locarno'][:2]
  status, body = post_form(server + 'api/search', {'patent': query, 'before': '2021-06-01, 2020-10-01',
                                                   'locarno': f'{locarno},99', 'top': '10'}, [])
  records = json.loads(body)
  assert status == 200 and [r['filters']['before'] for r in records] == ['2021-06-01', '2020-10-01']
  for record in records:
    ids, _, passing = reference_ranking(meta, redbook['vectors'], _patent_vector(redbook, query), 10,
                                        before=record['filters']['before'], locarno=(locarno, '99'),
                                        family=patents[query]['family_id'])
    assert [h['patent_id'] for h in record['hits']] == ids and record['patents_searched'] == passing
    assert record['filters']['locarno'] == [locarno, '99'] and 'source' not in record['model']
    assert str(redbook['root']) not in json.dumps(record)
  for fields, expected in [({'patent': query, 'before': '2021-02-29'}, "before '2021-02-29' is not a date"),
                           ({'patent': query, 'before': ','.join(['2020-01-0' + str(d) for d in range(1, 6)])},
                            'before names 5 dates; this server takes at most 4'),
                           ({'patent': 'D0999999'}, f"patent 'D0999999' is not in the index ({N} patents)")]:
    status, body = post_form(server + 'api/search', fields, [])
    assert status == 400 and expected in json.loads(body)['error'] and str(redbook['root']) not in body, body
