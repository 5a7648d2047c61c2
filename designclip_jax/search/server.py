"""The search page and its JSON API (FastAPI + uvicorn, extra ``[search]``): upload or drop drawings, type words
or name a patent of the index, filter by effective filing date, Locarno and USPC class; ranked patents with their
drawings, other views and family, and each search's record. A bad upload gets an error on the page (HTTP 4xx)
and the server goes on serving.

``POST /api/search`` answers the search record (``search.record``; a list of records when ``before`` names several
dates), ``POST /`` the page, ``GET /drawing/<row>`` one drawing of the index as PNG (the page's images, fetched
by the browser when shown). A refined search (filters changed) sends its drawings again: the page keeps them in
its form, and the server keeps nothing between requests.

Made to be exposed: requests are bounded (body size, drawings per query, bytes per drawing, ``top``; a POST
without a Content-Length is refused, so the bound holds before anything is read), drawings past
``data.images.MAX_PIXELS`` are refused from their header, responses and errors name no path of this
machine, and the API description (/docs, /redoc, /openapi.json) is off unless asked for. There is no
authentication: ``serve`` warns when it listens beyond this machine.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations, whose types are imported
# inside create_app, at definition time.

import dataclasses
import errno
import ipaddress
import socket
import sys
import threading

from designclip_jax.search import report

TITLE = 'DesignCLIP prior-art search'
FORM_BYTES = 1 << 20  # the form's fields and multipart framing, beside the drawings


@dataclasses.dataclass(frozen=True)
class Limits:
  max_top: int = 100
  max_uploads: int = 12
  max_upload_bytes: int = 16 << 20  # a 600 dpi letter sheet as a group-4 TIFF is well under 1 MB
  max_connections: int = 32  # more at once are answered 503 by uvicorn
  max_cutoffs: int = 4  # dates in one query's before: one search each

  @property
  def max_body_bytes(self) -> int:
    return self.max_uploads * self.max_upload_bytes + FORM_BYTES


class _Refused(Exception):
  """A request refused before it reaches the index: an HTTP status and a one-line reason."""

  def __init__(self, status: int, reason: str):
    super().__init__(reason)
    self.status = status


def _footer(searcher) -> str:
  model = searcher.index.manifest.model
  step = f' step {model["step"]}' if model.get('step') is not None else ''
  return (f'{len(searcher.index):,} embeddings from {len(searcher.index.manifest.datasets)} source(s); '
          f'model weights {model["fingerprint"][:12]}{step}')


def create_app(searcher, limits: Limits = Limits(), api_docs: bool = False):
  # pylint: disable-next=import-outside-toplevel
  from fastapi import Depends, FastAPI, File, Form, Request, Response, UploadFile
  from fastapi.responses import HTMLResponse, JSONResponse  # pylint: disable=import-outside-toplevel
  from designclip_jax.search import filters as filters_lib  # pylint: disable=import-outside-toplevel
  from designclip_jax.search.index import SearchError  # pylint: disable=import-outside-toplevel
  from designclip_jax.search.queries import Image, Query  # pylint: disable=import-outside-toplevel

  docs = dict(docs_url='/docs', redoc_url='/redoc', openapi_url='/openapi.json') if api_docs else \
      dict(docs_url=None, redoc_url=None, openapi_url=None)
  app = FastAPI(title=TITLE, **docs)
  lock = threading.Lock()  # one query at a time on the devices
  footer = _footer(searcher)

  @app.middleware('http')
  async def bounded_body(request: Request, call_next):
    """Refuse from the headers alone a POST whose body would pass the bound (h11 reads no more than the
    declared length, so a declared length is the length); a chunked body has none and is refused."""
    if request.method == 'POST':
      length = request.headers.get('content-length')
      if length is None or not length.isdigit():
        return _refusal(request, _Refused(411, 'a search request needs a Content-Length header'))
      if int(length) > limits.max_body_bytes:
        return _refusal(request, _Refused(413, f'the request is {int(length) / 2**20:.1f} MB, more than the '
                                               f'{limits.max_body_bytes / 2**20:.0f} MB this server takes'))
    return await call_next(request)

  def _refusal(request, error: _Refused, form=None):
    if request.url.path.startswith('/api/'):
      return JSONResponse({'error': str(error)}, status_code=error.status)
    form = form or {'form': {}, 'max_top': limits.max_top}
    return HTMLResponse(report.render(title=TITLE, error=str(error), footer=footer, **form), status_code=error.status)

  def read_uploads(images) -> list[tuple[str, bytes]]:
    images = [f for f in images if f.filename]
    if len(images) > limits.max_uploads:
      raise _Refused(413, f'{len(images)} drawings in one query; this server takes at most {limits.max_uploads}')
    uploads = []
    for f in images:
      data = f.file.read(limits.max_upload_bytes + 1)
      if len(data) > limits.max_upload_bytes:
        raise _Refused(413, f'query image {f.filename}: larger than the {limits.max_upload_bytes / 2**20:g} MB this '
                            'server takes per drawing')
      uploads.append((f.filename, data))
    return uploads

  def run(images, fields: dict, page: bool):
    """The searches of a request (one per cut-off) -> query.Result list."""
    if not 1 <= fields['top'] <= limits.max_top:
      raise _Refused(400, f'top must be between 1 and {limits.max_top}, got {fields["top"]}')
    try:
      chosen = filters_lib.parse(fields['before'], fields['locarno'], fields['class_code'], fields['target'],
                                 names=('before', 'locarno', 'class', 'target'))
    except SearchError as e:
      raise _Refused(400, str(e)) from None
    if len(chosen.before) > limits.max_cutoffs:
      raise _Refused(400, f'before names {len(chosen.before)} dates; this server takes at most {limits.max_cutoffs}')
    uploads = read_uploads(images)
    query = Query(chosen, fields['top'], fields['patent'].strip() or None,
                  tuple(Image(name, data=data) for name, data in uploads), fields['text'])
    with lock:
      try:
        return searcher.run([query.check(max_top=limits.max_top)], with_source=False, query_sheets=page)
      except SearchError as e:  # errors name the index by its folder: not shown beyond this machine
        raise _Refused(400, str(e).replace(f'index {searcher.index_dir}', 'the index')) from None

  def form_fields(text: str = Form(''), patent: str = Form(''), before: str = Form(''), locarno: str = Form(''),
                  class_code: str = Form(''), top: int = Form(20), target: str = Form('drawings')) -> dict:
    return dict(text=text, patent=patent, before=before, locarno=locarno, class_code=class_code, top=top,
                target=target)

  @app.get('/', response_class=HTMLResponse)
  def page():
    return report.render(title=TITLE, form={}, footer=footer, max_top=limits.max_top)

  @app.post('/', response_class=HTMLResponse)
  def search_page(request: Request, images: list[UploadFile] = File(default=[]),
                  fields: dict = Depends(form_fields)):
    form = dict(form=fields, max_top=limits.max_top)
    try:
      results = run(images, fields, page=True)
    except _Refused as e:
      return _refusal(request, e, form)
    url = lambda row: f'/drawing/{row}'
    shown = [report.Shown(r, [url(h.row) for h in r.hits],
                          [[url(v) for v in searcher.catalog.other_views(h)] for h in r.hits]) for r in results]
    return report.render(title=TITLE, shown=shown, footer=footer, **form)

  @app.post('/api/search')
  def search_json(request: Request, images: list[UploadFile] = File(default=[]),
                  fields: dict = Depends(form_fields)):
    try:
      records = [r.record for r in run(images, fields, page=False)]
    except _Refused as e:
      return _refusal(request, e)
    return records[0] if len(records) == 1 else records

  @app.get('/drawing/{row}')
  def drawing(row: int):
    png = searcher.catalog.drawing(row) if 0 <= row < len(searcher.catalog) else None
    if png is None:
      return Response(status_code=404)
    return Response(png, media_type='image/png', headers={'Cache-Control': 'private, max-age=3600'})

  return app


def check_port_free(host: str, port: int) -> None:
  from designclip_jax.search.index import SearchError  # pylint: disable=import-outside-toplevel
  with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
    try:
      s.bind((host, port))
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise SearchError(f'port {port} on {host} is already in use; choose another with --port') from None
      raise SearchError(f'cannot listen on {host}:{port}: {e.strerror}') from None


def is_loopback(host: str) -> bool:
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:  # a host name: whatever it resolves to, it is not known to stay on this machine
    return False


def serve(searcher, host: str = '127.0.0.1', port: int = 8000, *, limits: Limits = Limits(),
          api_docs: bool = False) -> None:
  import uvicorn  # pylint: disable=import-outside-toplevel
  check_port_free(host, port)
  if not is_loopback(host):
    print(f'warning: listening on {host}, beyond this machine: anyone who reaches port {port} can search the index '
          'and upload files, and there is no authentication; put an authenticating proxy (and TLS) in front',
          file=sys.stderr, flush=True)
  print(f'serving {TITLE} on http://{host}:{port}/ (Ctrl-C stops)', flush=True)
  uvicorn.run(create_app(searcher, limits, api_docs), host=host, port=port, log_level='warning',
              limit_concurrency=limits.max_connections)
