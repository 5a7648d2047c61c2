"""One HTML page for searches and their ranked patents: the ``--report`` file (self-contained: drawings as data
URIs, so it reads offline) and the server's page (which adds the search form and loads drawings by URL, the
other views only when scrolled to). Each hit shows its drawing, its other views, dates, classes and the
patents of its family in the index; each search its record, to download and file."""

from __future__ import annotations

import base64
import dataclasses
import html
import json

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;color:#222;padding:0 1rem}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.1rem;margin:1.2rem 0 .2rem} .muted{color:#666;font-size:.85rem}
.query{display:flex;gap:.8rem;align-items:center;flex-wrap:wrap;margin:.8rem 0}
.query img{width:96px;height:96px;border:1px solid #ccc;background:#fff}
.hits{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.8rem;list-style:none;padding:0}
.hit{border:1px solid #ddd;border-radius:6px;padding:.6rem;background:#fafafa}
.hit>img{width:100%;aspect-ratio:1;object-fit:contain;background:#fff;border:1px solid #eee}
.hit .id{font-weight:600} .hit .score{float:right;font-variant-numeric:tabular-nums}
.views{display:flex;gap:.25rem;flex-wrap:wrap;margin-top:.3rem}
.views img{width:44px;height:44px;object-fit:contain;background:#fff;border:1px solid #ddd}
.error{background:#fdecea;border:1px solid #f5c2c0;padding:.6rem;border-radius:6px;margin:.8rem 0}
form{border:1px solid #ddd;border-radius:6px;padding:.8rem;display:grid;gap:.6rem}
#drop{border:2px dashed #aaa;border-radius:6px;padding:1.2rem;text-align:center;color:#555}
#drop.over{border-color:#36c;background:#eef3ff}
form .row{display:flex;gap:.6rem;flex-wrap:wrap;align-items:center}
input[type=text]{padding:.35rem} input[name=text]{flex:1;min-width:16rem}
"""

# The form is sent by fetch() and only #results is replaced: the file input keeps the chosen drawings, so a
# search refined (filters changed) sends them again without a new upload; the server keeps nothing between
# requests. Without JavaScript the form posts as a plain form.
_SCRIPT = """
const form = document.getElementById('search-form'), drop = document.getElementById('drop'),
  input = document.getElementById('images');
const show = () => { drop.querySelector('span').textContent = input.files.length ?
  Array.from(input.files).map(f => f.name).join(', ') : 'Drop drawings here (several views of one design combine), or'; };
['dragenter', 'dragover'].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.add('over'); }));
['dragleave', 'drop'].forEach(e => drop.addEventListener(e, ev => { ev.preventDefault(); drop.classList.remove('over'); }));
drop.addEventListener('drop', ev => { input.files = ev.dataTransfer.files; show(); });
input.addEventListener('change', show);
form.addEventListener('submit', async ev => {
  ev.preventDefault();
  const results = document.getElementById('results');
  results.setAttribute('aria-busy', 'true');
  try {
    const answer = await fetch(form.action, {method: 'POST', body: new FormData(form)});
    const page = new DOMParser().parseFromString(await answer.text(), 'text/html');
    results.replaceWith(page.getElementById('results'));
  } catch (e) {
    results.innerHTML = '<div class="error" id="error">the search did not reach the server: ' + e + '</div>';
    results.removeAttribute('aria-busy');
  }
});
"""

FIELDS = ('text', 'patent', 'before', 'locarno', 'class_code', 'top', 'target')


@dataclasses.dataclass
class Shown:
  """A search as the page shows it: its result (``query.Result``), and per hit the image source (a data URI or a
  URL; '' for none) of its drawing and of its other views."""
  result: object
  images: list
  views: list


def data_uri(png: bytes | None) -> str:
  return 'data:image/png;base64,' + base64.b64encode(png).decode() if png else ''


def _form(values: dict, max_top: int) -> str:
  v = lambda name: html.escape(str(values.get(name, '') or ''))
  options = ''.join(f'<option value="{t}"{" selected" if t == values.get("target", "drawings") else ""}>{t}</option>'
                    for t in ('drawings', 'captions', 'all'))
  field = lambda name, label, hint, size: (f'<label>{label} <input type="text" name="{name}" size="{size}" '
                                           f'placeholder="{hint}" value="{v(name)}"></label>')
  return f"""<form id="search-form" method="post" action="/" enctype="multipart/form-data">
<div id="drop"><span>Drop drawings here (several views of one design combine), or</span>
<input type="file" id="images" name="images" multiple accept=".tif,.tiff,.png,.jpg,.jpeg,image/*"></div>
<div class="row"><input type="text" name="text" placeholder="words, e.g. a chair with curved legs" value="{v('text')}">
{field('patent', 'or patent', 'D0907292', 10)}</div>
<div class="row">{field('before', 'filed before', 'YYYY-MM-DD, ...', 14)}{field('locarno', 'Locarno', '28, 06-01', 10)}
{field('class_code', 'USPC class', 'D7, D28', 8)}
<label>top <input name="top" type="number" min="1" max="{max_top}" value="{v('top') or 20}" style="width:4rem"></label>
<label>match <select name="target">{options}</select></label>
<button type="submit" id="search">Search</button></div>
<div class="muted">Lists: separate by commas. A patent's own drawings are its query, its family left out and the
cut-off its effective filing date unless given; dates compare effective filing dates (strictly before).</div></form>"""


def _describe(result) -> str:
  query, rec = result.query, result.record
  f = rec['filters']
  parts = [f'patent {html.escape(query.patent)} (family left out: {html.escape(", ".join(f["family_left_out"]))})'
           if query.patent else '', f'words: “{html.escape(query.text)}”' if query.text else '',
           f'filed before {f["before"]} ({html.escape(f["before_from"])})' if f['before'] else '',
           f'Locarno {html.escape(", ".join(f["locarno"]))}' if f['locarno'] else '',
           f'class {html.escape(", ".join(f["class"]))}' if f['class'] else '', f'matching {html.escape(f["target"])}',
           f'{rec["patents_searched"]:,} patents searched']
  return ' · '.join(p for p in parts if p)


def _hit(rank: int, hit, image: str, views: list) -> str:
  picture = f'<img alt="drawing of {html.escape(hit.patent_id)}" src="{image}">' if image else \
      '<div class="muted">drawing not available (data set moved)</div>'
  details = [f'class {html.escape(hit.class_)}' if hit.class_ else '',
             f'Locarno {html.escape(hit.locarno)}' if hit.locarno else '',
             f'effectively filed {hit.effective_filing_date}' if hit.effective_filing_date else '',
             f'granted {hit.grant_date}' if hit.grant_date else '',
             html.escape(hit.view or hit.kind) + (' (caption)' if hit.kind == 'caption' else '')]
  family = (f'<div class="muted family">family: {html.escape(", ".join(hit.family))}</div>' if hit.family else '')
  strip = ''.join(f'<img loading="lazy" alt="other view {i + 1} of {html.escape(hit.patent_id)}" src="{src}">'
                  for i, src in enumerate(views) if src)
  return (f'<li class="hit">{picture}<div><span class="id">{rank}. {html.escape(hit.patent_id)}</span>'
          f'<span class="score">{hit.score:.3f}</span></div><div>{html.escape(hit.title)}</div>'
          f'<div class="muted">{" · ".join(d for d in details if d)}</div>{family}'
          + (f'<div class="views">{strip}</div>' if strip else '') + '</li>')


def _section(number: int, shown: Shown) -> str:
  result, rec = shown.result, shown.result.record
  text = json.dumps(rec, indent=1)
  out = [f'<section class="search" id="search-{number}"><h2>Search {number}</h2>',
         '<div class="query"><b>Query</b>' + ''.join(f'<img alt="query drawing {i + 1}" src="{data_uri(s)}">'
                                                     for i, s in enumerate(result.sheets)) +
         f'<span class="muted">{_describe(result)}</span></div>']
  if result.hits:
    out.append('<ol class="hits">' + ''.join(_hit(rank, h, image, views) for rank, (h, image, views)
                                             in enumerate(zip(result.hits, shown.images, shown.views), 1)) + '</ol>')
  else:
    out.append('<p class="no-hits">No patent matches this query and filter.</p>')
  out.append(f'<p class="muted">Search record ({rec["time"]}, model {rec["model"]["fingerprint"][:12]}, '
             f'index {rec["index"]["index_json_sha256"][:12]}): '
             f'<a download="search-record-{number}.json" href="data:application/json;base64,'
             f'{base64.b64encode(text.encode()).decode()}">download it to file</a></p>'
             f'<script type="application/json" class="record">{text.replace("<", chr(92) + "u003c")}</script>'
             '</section>')
  return ''.join(out)


def render(*, title: str, shown=(), error: str | None = None, form: dict | None = None, footer: str = '',
           max_top: int = 100) -> str:
  """The page: the search form (``form``: its values; None: a report, no form), then the error or each search."""
  parts = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f'<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>']
  if form is not None:
    parts.append(_form(form, max_top))
  parts.append('<div id="results">')
  if error:  # the query was not run: no query or result section
    parts.append(f'<div class="error" id="error">{html.escape(error)}</div>')
  else:
    parts += [_section(i, s) for i, s in enumerate(shown, 1)]
  parts.append('</div>')
  if footer:
    parts.append(f'<p class="muted">{html.escape(footer)}</p>')
  if form is not None:
    parts.append(f'<script>{_SCRIPT}</script>')
  parts.append('</body></html>')
  return ''.join(parts)
