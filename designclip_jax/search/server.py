"""The local search page (FastAPI + uvicorn, extra ``[search]``): upload or drop drawings and/or
type words; ranked patents with thumbnails. A bad upload gets an error on the page (HTTP 400) and
the server goes on serving."""

# No `from __future__ import annotations`: FastAPI reads the route annotations, whose types are imported
# inside create_app, at definition time.

import errno
import socket
import threading

from designclip_jax.search import report
from designclip_jax.search.index import SearchError, describe_model

TITLE = 'DesignCLIP prior-art search'


def create_app(searcher):
  from fastapi import FastAPI, File, Form, UploadFile  # pylint: disable=import-outside-toplevel
  from fastapi.responses import HTMLResponse, JSONResponse  # pylint: disable=import-outside-toplevel

  app = FastAPI(title=TITLE)
  lock = threading.Lock()  # one query at a time on the devices
  footer = (f'{len(searcher.index):,} embeddings from {len(searcher.index.manifest.datasets)} data set(s); '
            f'model {describe_model(searcher.index.manifest.model)}')

  def run(images, text, class_code, top, target):
    uploads = [(f.filename, f.file.read()) for f in images if f.filename]
    with lock:
      sheets, hits = searcher.search(uploads, text, top=top, class_code=class_code, target=target)
      return sheets, hits, [searcher.thumbnail(h) for h in hits]

  @app.get('/', response_class=HTMLResponse)
  def page():
    return report.render(title=TITLE, form=True, footer=footer)

  @app.post('/', response_class=HTMLResponse)
  def search_page(images: list[UploadFile] = File(default=[]), text: str = Form(''), class_code: str = Form(''),
                  top: int = Form(20), target: str = Form('drawings')):
    form = dict(text=text, class_code=class_code, top=top, target=target)
    try:
      sheets, hits, thumbs = run(images, text, class_code, top, target)
    except SearchError as e:
      return HTMLResponse(report.render(title=TITLE, form=True, error=str(e), footer=footer, **form), status_code=400)
    return report.render(title=TITLE, form=True, hits=hits, thumbnails=thumbs, query_sheets=sheets,
                         footer=footer, **form)

  @app.post('/api/search')
  def search_json(images: list[UploadFile] = File(default=[]), text: str = Form(''), class_code: str = Form(''),
                  top: int = Form(20), target: str = Form('drawings')):
    try:
      _, hits, _ = run(images, text, class_code, top, target)
    except SearchError as e:
      return JSONResponse({'error': str(e)}, status_code=400)
    return {'hits': [h.to_json() for h in hits]}

  return app


def check_port_free(host: str, port: int) -> None:
  with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
    try:
      s.bind((host, port))
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise SearchError(f'port {port} on {host} is already in use; choose another with --port') from None
      raise SearchError(f'cannot listen on {host}:{port}: {e.strerror}') from None


def serve(searcher, host: str = '127.0.0.1', port: int = 8000) -> None:
  import uvicorn  # pylint: disable=import-outside-toplevel
  check_port_free(host, port)
  print(f'serving {TITLE} on http://{host}:{port}/ (Ctrl-C stops)', flush=True)
  uvicorn.run(create_app(searcher), host=host, port=port, log_level='warning')
