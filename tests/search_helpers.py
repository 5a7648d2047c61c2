"""What the search tests share: a float64 brute-force ranking with an examiner's filters, the search app served on
loopback in a thread, a headless Chromium, the check of a one-line error."""

import contextlib
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

from tests.processes import free_port

CHROMIUM = '/usr/bin/chromium'


def reference_ranking(meta, vectors, query, top, *, kinds=('drawing',), before=None, locarno=(), classes=(),
                      family=None):
  """Per patent the best float64 cosine over its rows passing the filters, best first: rows of ``kinds``, whose
  effective filing date is strictly before ``before`` (no date: never), whose Locarno code is one of ``locarno``
  or in one of its classes, whose class is one of ``classes``, and whose family (its family id, else the patent
  itself) is not ``family``. Also the number of patents with a passing row."""
  keep = np.isin(meta['kind'], kinds)
  if before is not None:
    keep &= ~np.isnat(meta['effective_filing_date']) & (meta['effective_filing_date'] < np.datetime64(before))
  if locarno:
    keep &= np.array([any(c == f or (len(f) == 2 and c[:3] == f + '-') for f in locarno) for c in meta['locarno']])
  if classes:
    keep &= np.isin(meta['class'], classes)
  if family is not None:
    keep &= np.array([(f or 'patent ' + p) != family for f, p in zip(meta['family_id'], meta['patent_id'])])
  scores = vectors.astype(np.float64) @ np.asarray(query, np.float64)
  best = {}
  for row in np.flatnonzero(keep):
    best[meta['patent_id'][row]] = max(best.get(meta['patent_id'][row], -np.inf), scores[row])
  ranked = sorted(best.items(), key=lambda kv: -kv[1])[:top]
  return [p for p, _ in ranked], np.array([s for _, s in ranked]), len(best)


def family_key(meta, patent_id):
  row = list(meta['patent_id']).index(patent_id)
  return meta['family_id'][row] or 'patent ' + patent_id


@contextlib.contextmanager
def serving(searcher, limits=None):
  """The search app of ``searcher`` on a free loopback port: yields its URL."""
  uvicorn = pytest.importorskip('uvicorn', reason='the [search] extra is not installed')
  from designclip_jax.search.server import Limits, create_app  # pylint: disable=import-outside-toplevel
  port = free_port()
  srv = uvicorn.Server(uvicorn.Config(create_app(searcher, limits or Limits()), host='127.0.0.1', port=port,
                                      log_level='error'))
  thread = threading.Thread(target=srv.run, daemon=True)
  thread.start()
  deadline = time.time() + 30
  while not srv.started and time.time() < deadline:
    time.sleep(0.05)
  try:
    yield f'http://127.0.0.1:{port}/'
  finally:
    srv.should_exit = True
    thread.join(10)


@contextlib.contextmanager
def chromium_page():
  """A page of a headless Chromium (skips the test where there is none, or no Playwright)."""
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does under CI=true)')
  sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed ([search] extra)')
  with sync_api.sync_playwright() as p:
    # Chromium stops on a trap under mimalloc, which scripts/test.sh preloads: it keeps its own malloc
    browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'],
                                env={k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'})
    try:
      yield browser.new_page(viewport={'width': 1100, 'height': 900})
    finally:
      browser.close()


def one_line_error(capsys, main, argv, expected):
  """``main(argv)`` exits 2 with one line on stderr holding ``expected``, and no traceback."""
  with pytest.raises(SystemExit) as e:
    main(argv)
  err = capsys.readouterr().err.strip()
  assert e.value.code == 2 and expected in err and '\n' not in err and 'Traceback' not in err, err


def multipart(fields, files) -> tuple[bytes, str]:
  boundary = uuid.uuid4().hex
  body = b''.join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                  for k, v in fields.items())
  body += b''.join(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
                   f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b'\r\n' for name, data in files)
  return body + f'--{boundary}--\r\n'.encode(), f'multipart/form-data; boundary={boundary}'


def post_form(url, fields, files):
  """A multipart/form-data POST (as a browser's form sends it) -> (status, body)."""
  body, content_type = multipart(fields, files)
  try:
    with urllib.request.urlopen(urllib.request.Request(url, body, {'Content-Type': content_type}), timeout=60) as r:
      return r.status, r.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, e.read().decode()
