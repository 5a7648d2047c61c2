"""Prior-art search: indexing (resume, append), queries against a float64 NumPy brute force, the CLI's
outputs and one-line errors, and the web page in a real (headless) Chromium."""

import ast
import collections
import csv
import glob
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

from designclip_jax.data import pipeline
from designclip_jax.eval.embed import embed_images
from designclip_jax.eval.metrics import l2_normalize
from designclip_jax.search import index as index_lib
from designclip_jax.search.__main__ import main
from designclip_jax.search.query import Searcher
from designclip_jax.search.topk import DeviceIndex
from designclip_jax.data.impact import VIEWS
from tests.eval_helpers import tiny_clip_dir

CHROMIUM = '/usr/bin/chromium'


@pytest.fixture(scope='module')
def built(synthetic_data, tmp_path_factory):
  """A tiny random CLIP (HF directory) and a float32 index of every split of the session's synthetic set.
  A random tower embeds all drawings alike (cosine ~0.999), so this index keeps float32: the margins
  between drawings are below float16's resolution."""
  csv_path, raw_dir, data_dir = synthetic_data
  root = tmp_path_factory.mktemp('search')
  model = tiny_clip_dir(str(root / 'model'), data_dir)
  idx = str(root / 'index')
  main(['index', '--checkpoint', model, '--data', data_dir, '--out', idx, '--records-per-shard', '40',
        '--dtype', 'float32'])
  with open(csv_path) as f:
    rows = {r['id']: r for r in csv.DictReader(f)}
  return dict(model=model, index=idx, data=data_dir, raw=raw_dir, rows=rows, root=root, searcher=Searcher(idx))


def _test_patent(built):
  """A test-split patent, its first raw sheet (TIFF, before ingestion), its caption and class."""
  record = next(pipeline.eval_records(built['data'], 'test'))
  files = ast.literal_eval(built['rows'][record['patent_id']]['file_names'])
  return record, glob.glob(os.path.join(built['raw'], '**', files[0]), recursive=True)[0]


def _brute_force(searcher, vector, top, kinds, class_code=None):
  """Per patent, the best score over its rows of the wanted kinds (and class), float64, best first."""
  meta = searcher.index.meta
  scores = searcher.index.vectors.astype(np.float64) @ vector.astype(np.float64)
  keep = np.isin(meta['kind'], kinds) & ((meta['class'] == class_code) if class_code else True)
  best = {}
  for row in np.flatnonzero(keep):
    pid = meta['patent_id'][row]
    best[pid] = max(best.get(pid, -np.inf), scores[row])
  ranked = sorted(best.items(), key=lambda kv: -kv[1])
  return [p for p, _ in ranked[:top]], np.array([s for _, s in ranked[:top]])


def test_device_top_k_equals_numpy_on_8_devices():
  rng = np.random.default_rng(0)
  vectors = l2_normalize(rng.normal(size=(5003, 16))).astype(np.float16)
  kinds, classes = rng.integers(0, 2, 5003), rng.integers(0, 4, 5003)
  queries = rng.normal(size=(3, 16)).astype(np.float32)
  ref = queries.astype(np.float64) @ vectors.astype(np.float64).T
  ref[:, ~((kinds == 1) & (classes == 2))] = -np.inf
  expected = np.argsort(-ref, axis=1, kind='stable')[:, :50]
  for method in ('exact', 'approx'):  # approx_max_k off TPU is exact (sort + slice): the TPU path's code runs
    index = DeviceIndex(vectors, kinds, classes, chunk=128, method=method)  # 8 devices x 5 chunks each
    assert len(index.vectors.sharding.device_set) == 8
    scores, rows = index.top_k(queries, 50, kinds=(1,), class_id=2)
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(ref, expected, 1), rtol=1e-5)
  scores, rows = index.top_k(queries, 5000, kinds=(0,), class_id=3)  # more slots than matching rows
  assert ((rows >= 0).sum(axis=1) == ((kinds == 0) & (classes == 3)).sum()).all()


def test_results_equal_a_brute_force_numpy_ranking(built):
  searcher = built['searcher']
  rng = np.random.default_rng(1)
  codes = sorted(set(searcher.index.meta['class']))
  for target, kinds, class_code in [('drawings', ['drawing'], None), ('captions', ['caption'], None),
                                    ('all', ['drawing', 'caption'], codes[0]), ('drawings', ['drawing'], codes[-1])]:
    vector = l2_normalize(rng.normal(size=searcher.index.vectors.shape[1]))
    hits = searcher.search_vector(vector, top=15, class_code=class_code, target=target)
    ids, scores = _brute_force(searcher, vector, 15, kinds, class_code)
    assert [h.patent_id for h in hits] == ids
    np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-5, atol=1e-6)


def test_own_drawing_finds_its_patent_first_with_cli_json_and_report(built, tmp_path, capsys):
  record, tiff = _test_patent(built)
  out_json, out_html = tmp_path / 'hits.json', tmp_path / 'report.html'
  main(['query', '--index', built['index'], '--image', tiff, '--top', '5', '--json', str(out_json),
        '--report', str(out_html)])
  hits = json.loads(out_json.read_text())['hits']
  assert len(hits) == 5 and len({h['patent_id'] for h in hits}) == 5
  assert hits[0]['patent_id'] == record['patent_id']
  assert hits[0]['score'] == pytest.approx(1.0, abs=1e-5)
  assert hits[0]['title'] == record['title'] and hits[0]['view'] == VIEWS[record['views'][0]]
  assert [h['score'] for h in hits] == sorted((h['score'] for h in hits), reverse=True)
  assert record['patent_id'] in capsys.readouterr().out
  page = out_html.read_text()
  assert page.count('src="data:image/png;base64,') == 6 and 'http' not in page  # query + 5 hits, offline
  assert record['patent_id'] in page and record['title'] in page


def test_views_of_one_design_combine(built):
  searcher = built['searcher']
  record, _ = _test_patent(built)
  sheets = record['images'][:3]
  per_view = l2_normalize(embed_images(searcher.clip, sheets, progress=False, normalization=searcher.normalization))
  np.testing.assert_allclose(searcher.encode(sheets), l2_normalize(per_view.mean(axis=0)), atol=1e-6)
  hits = searcher.search_vector(searcher.encode(sheets), top=3)
  assert hits[0].patent_id == record['patent_id']


def test_caption_finds_its_patent_and_class_filter_holds(built, tmp_path):
  searcher = built['searcher']
  records = [r for split in ('train', 'validation', 'test') for r in pipeline.eval_records(built['data'], split)]
  captions = collections.Counter(r['caption'] for r in records)
  record = next(r for r in records if captions[r['caption']] == 1)  # synthetic captions can repeat
  _, hits = searcher.search(text=record['caption'], top=5, target='captions')
  assert hits[0].patent_id == record['patent_id'] and hits[0].score == pytest.approx(1.0, abs=1e-5)
  code = hits[0].class_
  out = tmp_path / 'cls.json'
  main(['query', '--index', built['index'], '--text', record['caption'], '--class', code.lower(), '--top', '100',
        '--target', 'all', '--json', str(out)])
  got = json.loads(out.read_text())['hits']
  in_class = {p for p, c in zip(searcher.index.meta['patent_id'], searcher.index.meta['class']) if c == code}
  assert {h['class'] for h in got} == {code} and {h['patent_id'] for h in got} == in_class


def test_index_resumes_and_appends_without_rebuilding(built, tmp_path):
  idx = str(tmp_path / 'idx')
  args = ['index', '--checkpoint', built['model'], '--split', 'test', '--records-per-shard', '6']  # float16
  main(args + ['--data', built['data'], '--out', idx])
  complete = index_lib.load(idx)
  manifest = index_lib.Manifest.load(idx)
  assert len(manifest.shards) >= 3
  manifest.shards = manifest.shards[:1]  # as if stopped after the first shard
  manifest.save(idx)
  first = os.path.getmtime(os.path.join(idx, 'shard-00000.npy'))
  main(args + ['--data', built['data'], '--out', idx])
  resumed = index_lib.load(idx)
  assert os.path.getmtime(os.path.join(idx, 'shard-00000.npy')) == first
  np.testing.assert_array_equal(resumed.vectors, complete.vectors)
  for c in index_lib.META_COLUMNS:
    np.testing.assert_array_equal(resumed.meta[c], complete.meta[c])

  other = str(tmp_path / 'other_data')
  shutil.copytree(built['data'], other)
  before = {s['name']: os.path.getmtime(os.path.join(idx, s['name'] + '.npy')) for s in resumed.manifest.shards}
  main(args + ['--data', other, '--out', idx])
  appended = index_lib.load(idx)
  assert {n: os.path.getmtime(os.path.join(idx, n + '.npy')) for n in before} == before
  assert len(appended) == 2 * len(complete) and set(appended.meta['dataset']) == {0, 1}
  np.testing.assert_array_equal(appended.vectors[len(complete):], complete.vectors)
  assert appended.vectors.dtype == np.float16 and appended.manifest.dtype == 'float16'


def _one_line_error(capsys, argv, expected):
  with pytest.raises(SystemExit) as e:
    main(argv)
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and expected in err and '\n' not in err and 'Traceback' not in err, err


def test_bad_input_gives_one_line_errors(built, tmp_path, capsys):
  bad = tmp_path / 'drawing.png'
  bad.write_bytes(b'this is not an image')
  _one_line_error(capsys, ['query', '--index', built['index'], '--image', str(bad)],
                  f'query image {bad}: cannot be decoded')
  _one_line_error(capsys, ['query', '--index', built['index'], '--text', 'chair', '--class', 'D31'],
                  "--class 'D31' is not a USPC design class")

  other = tiny_clip_dir(str(tmp_path / 'other_model'), built['data'], seed=1)
  _one_line_error(capsys, ['query', '--index', built['index'], '--checkpoint', other, '--text', 'chair'],
                  f'index {built["index"]} was built by {built["model"]}')

  empty = str(tmp_path / 'empty_index')
  os.makedirs(empty)
  index_lib.Manifest(dtype='float16', model=built['searcher'].index.manifest.model, records_per_shard=8).save(empty)
  _one_line_error(capsys, ['query', '--index', empty, '--text', 'chair'], f'index {empty} is empty')

  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    s.listen()
    port = s.getsockname()[1]
    _one_line_error(capsys, ['serve', '--index', built['index'], '--port', str(port)],
                    f'port {port} on 127.0.0.1 is already in use')


@pytest.fixture(scope='module')
def server(built):
  uvicorn = pytest.importorskip('uvicorn', reason='the [search] extra is not installed')
  from designclip_jax.search.server import create_app
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  srv = uvicorn.Server(uvicorn.Config(create_app(built['searcher']), host='127.0.0.1', port=port, log_level='error'))
  thread = threading.Thread(target=srv.run, daemon=True)
  thread.start()
  deadline = time.time() + 30
  while not srv.started and time.time() < deadline:
    time.sleep(0.05)
  yield f'http://127.0.0.1:{port}/'
  srv.should_exit = True
  thread.join(10)


def _post(url, fields, files):
  """A multipart/form-data POST (as a browser's form sends it) -> (status, body)."""
  boundary = uuid.uuid4().hex
  body = b''.join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                  for k, v in fields.items())
  body += b''.join(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
                   f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b'\r\n' for name, data in files)
  body += f'--{boundary}--\r\n'.encode()
  request = urllib.request.Request(url, body, {'Content-Type': f'multipart/form-data; boundary={boundary}'})
  try:
    with urllib.request.urlopen(request, timeout=60) as r:
      return r.status, r.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, e.read().decode()


def test_server_keeps_serving_after_a_bad_upload(built, server):
  record, tiff = _test_patent(built)
  status, page = _post(server, {'text': ''}, [('broken.tif', b'\x00garbage')])
  assert status == 400 and 'query image broken.tif: cannot be decoded' in page
  with open(tiff, 'rb') as f:
    status, body = _post(server + 'api/search', {'top': '3'}, [('sheet.tif', f.read())])
  hits = json.loads(body)['hits']
  assert status == 200 and hits[0]['patent_id'] == record['patent_id'] and len(hits) == 3


def test_browser_upload_finds_the_patent(built, server, tmp_path):
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does under CI=true)')
  sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed ([search] extra)')
  record, tiff = _test_patent(built)
  with sync_api.sync_playwright() as p:
    # Chromium stops on a trap under mimalloc, which scripts/test.sh preloads: it keeps its own malloc
    browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'],
                                env={k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'})
    page = browser.new_page(viewport={'width': 1100, 'height': 900})
    page.goto(server)
    page.set_input_files('#images', tiff)
    page.click('#search')
    page.wait_for_selector('#hits')
    first = page.locator('.hit .id').first.inner_text()
    page.screenshot(path=str(os.environ.get('DESIGNCLIP_SCREENSHOT', tmp_path / 'search.png')), full_page=True)
    browser.close()
  assert first == f'1. {record["patent_id"]}'
