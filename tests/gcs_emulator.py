"""Cloud Storage on this machine, for the gs:// tests and benchmarks (protocols.md §9): gcp-storage-emulator on a
free loopback port, which every client finds through its own standard variable (gcsfs and so etils.epath,
google-cloud-storage, ArrayRecord's reader, TensorStore and so Orbax), so gs:// paths run the product's own code
with nothing mocked; and a reverse proxy in front of it that delays each request as a distant bucket would.

The emulator (2026.7.19) differs from GCS in two things the clients here rely on, and ``python -m tests.gcs_emulator``
runs it with both made as GCS does them:
- media downloads leave out the object's generation (``x-goog-generation``, ``x-goog-metageneration``; its issue
  #187 lists the missing headers). TensorStore reads it for its conditional writes, so an Orbax (OCDBT)
  checkpoint of more than one commit failed with 'Malformed StorageGeneration';
- a suffix range (``Range: bytes=-N``, the last N bytes) is served as the whole object with status 200.
  ArrayRecord's reader (google-cloud-cpp) opens a file by asking for its last MiB, so any shard over 1 MiB
  failed with 'Invalid Riegeli/records file ... Failed to read RiegeliPostscript'.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
from http import HTTPStatus
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Iterator

from tests.processes import free_port

BUCKET = 'bucket'
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def client_env(endpoint: str) -> dict[str, str]:
  """The variables that send every client to ``endpoint`` (http://127.0.0.1:PORT) without credentials."""
  return {'STORAGE_EMULATOR_HOST': endpoint,  # gcsfs (etils.epath), google-cloud-storage (tensorboardX)
          'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',  # else gcsfs probes the bucket type over gRPC, 60 s a bucket
          'CLOUD_STORAGE_EMULATOR_ENDPOINT': endpoint,  # ArrayRecord's C++ reader (Grain's and TFDS's data sources)
          'TENSORSTORE_GCS_HTTP_URL': endpoint, 'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'x'}  # TensorStore (Orbax)


def _wait_until_serving(endpoint: str, proc: subprocess.Popen, log, timeout: float = 60) -> None:
  deadline = time.monotonic() + timeout
  while True:
    try:
      with urllib.request.urlopen(f'{endpoint}/storage/v1/b', timeout=2) as response:
        if response.status == 200:
          return
    except OSError:
      pass
    if proc.poll() is not None or time.monotonic() > deadline:
      log.seek(0)
      raise RuntimeError(f'gcp-storage-emulator did not start (exit {proc.poll()}): {log.read()[-2000:]!r}')
    time.sleep(0.05)


@contextlib.contextmanager
def emulator(bucket: str = BUCKET, *, threaded: bool = False) -> Iterator[str]:
  """A fresh in-memory emulator holding the empty ``bucket``; yields its endpoint, stops it on exit. ``threaded``:
  requests served in parallel (for readers; see ``_serve_as_gcs``)."""
  port = free_port()
  endpoint = f'http://127.0.0.1:{port}'
  with tempfile.TemporaryFile('w+') as log:
    proc = subprocess.Popen([sys.executable, '-m', 'tests.gcs_emulator', 'start', '--host', '127.0.0.1',
                             '--port', str(port), '--in-memory', '--default-bucket', bucket, '--quiet']
                            + ['--threaded'] * threaded,
                            stdout=log, stderr=subprocess.STDOUT, cwd=_REPOSITORY)
    try:
      _wait_until_serving(endpoint, proc, log)
      yield endpoint
    finally:
      proc.terminate()
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _forget_cached_clients() -> None:
  """gcsfs keeps one client per set of options (and epath one filesystem): a client made before the variables
  changed would still talk to the old endpoint."""
  import gcsfs  # pylint: disable=import-outside-toplevel
  from etils.epath import backend  # pylint: disable=import-outside-toplevel
  gcsfs.GCSFileSystem.clear_instance_cache()
  type(backend.fsspec_backend)._get_filesystem.cache_clear()  # pylint: disable=protected-access


@contextlib.contextmanager
def clients_pointed_at(endpoint: str) -> Iterator[None]:
  """This process's clients and every subprocess it starts talk to ``endpoint``; restored on exit."""
  variables = client_env(endpoint)
  if 'gcsfs' in sys.modules and sys.modules['gcsfs'].GCSFileSystem.__name__ != 'GCSFileSystem':
    raise RuntimeError('gcsfs was imported before the emulator variables were set: it chose its bucket-type probe '
                       '(GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT) at import and would wait on it for every bucket')
  before = {k: os.environ.get(k) for k in variables}
  os.environ.update(variables)
  _forget_cached_clients()
  try:
    yield
  finally:
    for k, v in before.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    _forget_cached_clients()


class _Forward(http.server.BaseHTTPRequestHandler):
  """Each request waits a random delay (the time to its first byte), then goes to the upstream server unchanged;
  the answer streams back, so a client that reads only the start of an open-ended range and hangs up (ArrayRecord's
  reader does, one record at a time) is not sent the rest of the object."""
  protocol_version = 'HTTP/1.1'  # clients keep their connections to the proxy, as they do to GCS

  def log_message(self, *args):  # quiet
    del args

  def _body(self) -> bytes | None:
    if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
      chunks = []
      while True:
        size = int(self.rfile.readline().split(b';')[0], 16)
        chunks.append(self.rfile.read(size))
        self.rfile.readline()
        if size == 0:
          break
      while self.rfile.readline() not in (b'\r\n', b'\n', b''):
        pass  # trailers
      return b''.join(chunks)
    length = int(self.headers.get('Content-Length') or 0)
    return self.rfile.read(length) if length else None

  def _forward(self):
    body = self._body()
    self.server.delayed()
    headers = {k: v for k, v in self.headers.items() if k.lower() not in ('transfer-encoding', 'connection', 'host')}
    if body is not None:
      headers['Content-Length'] = str(len(body))
    upstream = http.client.HTTPConnection(self.server.upstream, timeout=120)  # the emulator closes after each answer
    try:
      upstream.request(self.command, self.path, body=body, headers=headers)
      response = upstream.getresponse()
      self.send_response(response.status, response.reason)
      for k, v in response.getheaders():
        if k.lower() not in ('transfer-encoding', 'connection', 'server', 'date'):
          self.send_header(k, v)
      if response.getheader('Content-Length') is None:
        self.close_connection = True  # the end of the body is the end of the connection
      self.end_headers()
      while self.command != 'HEAD' and (chunk := response.read(1 << 16)):
        self.wfile.write(chunk)
    except (BrokenPipeError, ConnectionResetError):  # the client hung up (it had read what it wanted)
      self.close_connection = True
    finally:
      upstream.close()

  do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


class DelayProxy(http.server.ThreadingHTTPServer):
  """A reverse proxy on a free loopback port in front of ``upstream`` (http://host:port) that delays each
  request by a uniform random ``delay_s`` = (low, high) seconds; (0, 0) forwards at once. Use as a context
  manager; ``endpoint`` is where clients go, ``requests`` counts what they sent."""
  daemon_threads = True

  def __init__(self, upstream: str, delay_s: tuple[float, float] = (0.02, 0.1), seed: int = 0):
    super().__init__(('127.0.0.1', free_port()), _Forward)
    self.upstream = upstream.split('://', 1)[-1]
    self.delay_s = delay_s
    self.requests = 0
    self._random, self._lock = random.Random(seed), threading.Lock()
    self.endpoint = f'http://127.0.0.1:{self.server_address[1]}'
    self._thread = threading.Thread(target=self.serve_forever, daemon=True)

  def delayed(self) -> None:
    with self._lock:
      self.requests += 1
      delay = self._random.uniform(*self.delay_s)
    time.sleep(delay)

  def __enter__(self) -> DelayProxy:
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self.shutdown()
    self.server_close()


def _serve_as_gcs(argv: list[str]) -> None:
  """gcp-storage-emulator's command line, its media downloads made as GCS's (see the module's docstring); with
  ``--threaded``, requests served in parallel as GCS serves them (the emulator serves one at a time: a benchmark
  of many reads in flight would measure that; its writes are not made safe for it, so only readers use it)."""
  from gcp_storage_emulator import __main__ as emulator_cli  # pylint: disable=import-outside-toplevel
  from gcp_storage_emulator import server  # pylint: disable=import-outside-toplevel
  from gcp_storage_emulator.handlers import objects  # pylint: disable=import-outside-toplevel
  if '--threaded' in argv:
    argv = [a for a in argv if a != '--threaded']
    server.server.HTTPServer = http.server.ThreadingHTTPServer  # the name APIThread builds its server from

  media = objects.download

  def download(request, response, storage, *args, **kwargs):
    suffix = re.fullmatch(r'\s*bytes=-(\d+)\s*', request.get_header('range') or '')
    if suffix:  # the last N bytes: as bytes=START- of the object's size
      size = len(storage.get_file(request.params['bucket_name'], request.params['object_id']))
      request._request_handler.headers.replace_header('range', f'bytes={max(0, size - int(suffix[1]))}-')  # pylint: disable=protected-access
    media(request, response, storage, *args, **kwargs)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
      response['x-goog-generation'], response['x-goog-metageneration'] = obj['generation'], obj['metageneration']

  objects.download = download  # objects.get serves ?alt=media through it
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler is media:
        handlers[method] = download
  emulator_cli.main(argv)


if __name__ == '__main__':
  _serve_as_gcs(sys.argv[1:])
