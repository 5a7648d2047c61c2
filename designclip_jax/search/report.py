"""One self-contained HTML page for a query and its ranked patents: the ``--report`` file and the
server's page (which adds the search form). Images are embedded as data URIs, so it reads offline."""

from __future__ import annotations

import base64
import html

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.4rem;margin:0 0 .3rem} .muted{color:#666;font-size:.85rem}
.query{display:flex;gap:.8rem;align-items:center;flex-wrap:wrap;margin:.8rem 0}
.query img{width:96px;height:96px;border:1px solid #ccc;background:#fff}
.hits{display:grid;grid-template-columns:repeat(auto-fill,minmax(13rem,1fr));gap:.8rem;list-style:none;padding:0}
.hit{border:1px solid #ddd;border-radius:6px;padding:.6rem;background:#fafafa}
.hit img{width:100%;aspect-ratio:1;object-fit:contain;background:#fff;border:1px solid #eee}
.hit .id{font-weight:600} .hit .score{float:right;font-variant-numeric:tabular-nums}
.error{background:#fdecea;border:1px solid #f5c2c0;padding:.6rem;border-radius:6px;margin:.8rem 0}
form{border:1px solid #ddd;border-radius:6px;padding:.8rem;display:grid;gap:.6rem}
#drop{border:2px dashed #aaa;border-radius:6px;padding:1.2rem;text-align:center;color:#555}
#drop.over{border-color:#36c;background:#eef3ff}
form .row{display:flex;gap:.6rem;flex-wrap:wrap;align-items:center}
input[type=text]{flex:1;min-width:16rem;padding:.35rem}
"""

_DROP_SCRIPT = """
const drop = document.getElementById('drop'), input = document.getElementById('images');
const show = () => { drop.querySelector('span').textContent = input.files.length ?
  Array.from(input.files).map(f => f.name).join(', ') : 'Drop drawings here (several views of one design combine), or'; };
['dragenter', 'dragover'].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.add('over'); }));
['dragleave', 'drop'].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.remove('over'); }));
drop.addEventListener('drop', ev => { input.files = ev.dataTransfer.files; show(); });
input.addEventListener('change', show);
"""


def data_uri(png: bytes | None) -> str:
  return 'data:image/png;base64,' + base64.b64encode(png).decode() if png else ''


def _form(text: str, class_code: str, top: int, target: str, max_top: int) -> str:
  options = ''.join(f'<option value="{t}"{" selected" if t == target else ""}>{t}</option>'
                    for t in ('drawings', 'captions', 'all'))
  return f"""<form method="post" action="/" enctype="multipart/form-data">
<div id="drop"><span>Drop drawings here (several views of one design combine), or</span>
<input type="file" id="images" name="images" multiple accept=".tif,.tiff,.png,.jpg,.jpeg,image/*"></div>
<div class="row"><input type="text" name="text" placeholder="words, e.g. a chair with curved legs"
 value="{html.escape(text)}"></div>
<div class="row"><label>class <input name="class_code" size="5" placeholder="any" value="{html.escape(class_code)}"></label>
<label>top <input name="top" type="number" min="1" max="{max_top}" value="{top}" style="width:4rem"></label>
<label>match <select name="target">{options}</select></label>
<button type="submit" id="search">Search</button></div></form>"""


def render(*, title: str, hits=(), thumbnails=(), query_sheets=(), text: str = '', class_code: str = '',
           top: int = 20, target: str = 'drawings', error: str | None = None, form: bool = False,
           footer: str = '', max_top: int = 100) -> str:
  """The page: optional form, the query as the model saw it, then one card per hit, best first."""
  parts = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f'<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>']
  if form:
    parts.append(_form(text, class_code, top, target, max_top))
  if error:
    parts.append(f'<div class="error" id="error">{html.escape(error)}</div>')
  if error:  # the query was not run: no query or result section
    query_sheets, text, hits = (), '', ()
  if query_sheets or text:
    described = [f'words: “{html.escape(text)}”' if text else '', f'class {html.escape(class_code)}' if class_code else '',
                 f'matching {html.escape(target)}']
    parts.append('<div class="query"><b>Query</b>' +
                 ''.join(f'<img alt="query drawing {i + 1}" src="{data_uri(s)}">' for i, s in enumerate(query_sheets)) +
                 f'<span class="muted">{" · ".join(d for d in described if d)}</span></div>')
  if hits:
    parts.append('<ol class="hits" id="hits">')
    for rank, (hit, thumb) in enumerate(zip(hits, thumbnails), 1):
      image = f'<img alt="drawing of {html.escape(hit.patent_id)}" src="{data_uri(thumb)}">' if thumb else \
          '<div class="muted">drawing not available (data set moved)</div>'
      details = [f'class {html.escape(hit.class_)}' if hit.class_ else '', html.escape(hit.view or hit.kind)]
      parts.append(f'<li class="hit">{image}<div><span class="id">{rank}. {html.escape(hit.patent_id)}</span>'
                   f'<span class="score">{hit.score:.3f}</span></div><div>{html.escape(hit.title)}</div>'
                   f'<div class="muted">{" · ".join(d for d in details if d)}'
                   f'{" (caption)" if hit.kind == "caption" else ""}</div></li>')
    parts.append('</ol>')
  elif query_sheets or text:
    parts.append('<p id="no-hits">No patent matches this query and filter.</p>')
  if footer:
    parts.append(f'<p class="muted">{html.escape(footer)}</p>')
  if form:
    parts.append(f'<script>{_DROP_SCRIPT}</script>')
  parts.append('</body></html>')
  return ''.join(parts)
