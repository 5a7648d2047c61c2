"""Shared by the ingestion tests: a copy of a synthetic CSV with one planted problem per kind; a task
whose worker dies."""

import ast
import csv
import os
import signal


def square_or_die(x):
  """A worker task for ordered_map (importable, so spawned workers find it): item 5 kills its own worker
  process, as the kernel's OOM killer or a crashing decoder would."""
  if x == 5:
    os.kill(os.getpid(), signal.SIGKILL)
  return x * x


def plant_bad_rows(csv_path, raw_dir, out_csv):
  """Copy the CSV, planting one problem per kind; return {(row, patent id): expected reason prefix}."""
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))
  expected = {}

  def first_sheet(row):
    name = ast.literal_eval(row['file_names'])[1]
    return os.path.join(raw_dir, name.rsplit('-D', 1)[0], name)

  rows[2]['class'] = 'D31123'
  expected[(3, rows[2]['id'])] = ('skipped', 'unknown class')
  rows[4]['caption'] = '   '
  expected[(5, rows[4]['id'])] = ('repaired', 'empty caption replaced by the title')
  rows[6]['file_names'] = rows[6]['file_names'][:-2]
  expected[(7, rows[6]['id'])] = ('skipped', 'malformed list in file_names')
  rows[8]['fig_desc'] = repr(['FIG. 1 is a drawing of the design.', 'FIG. 2 is another drawing.'])
  expected[(9, rows[8]['id'])] = ('repaired', 'fig_desc names no view')
  os.remove(first_sheet(rows[10]))
  expected[(11, rows[10]['id'])] = ('repaired', 'missing image')
  with open(first_sheet(rows[12]), 'wb') as f:
    f.write(b'not a tiff at all')
  expected[(13, rows[12]['id'])] = ('repaired', 'unreadable image')
  for name in ast.literal_eval(rows[14]['file_names']):
    os.remove(os.path.join(raw_dir, name.rsplit('-D', 1)[0], name))
  expected[(15, rows[14]['id'])] = ('skipped', 'missing image')
  rows.append(dict(rows[0]))
  expected[(len(rows), rows[0]['id'])] = ('skipped', 'duplicate id')
  with open(out_csv, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return expected, len(rows)


# ------------------------------------------------------------------------------ Red Book layouts
SMALL_GRANTS = ('USD0910059-20210209', 'USD0913312-20210316', 'USD0937858-20211207')  # 2-3 drawings each


def grant_zip(folder: str) -> bytes:
  """A per-patent folder as the Red Book's USD<number>-<date>.ZIP holds it (a folder of XML + TIFFs)."""
  import io
  import zipfile
  stem = os.path.basename(folder)
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as zf:
    for name in sorted(os.listdir(folder)):
      zf.write(os.path.join(folder, name), f'{stem}/{name}')
  return buffer.getvalue()


def weekly_tar(path: str, folders: list[str]) -> None:
  """I<date>.tar as the USPTO ships it: .../DESIGN/USD...ZIP per design grant, beside a utility, a plant
  and a reissue grant (junk inside: they must be skipped unread)."""
  import io
  import tarfile
  week = os.path.splitext(os.path.basename(path))[0]
  members = [(f'{week}/DESIGN/{os.path.basename(f)}.ZIP', grant_zip(f)) for f in folders]
  members += [(f'{week}/UTIL0907/US10881234-20210105.ZIP', b'not read'),
              (f'{week}/PLANT/USPP032712-20210105.ZIP', b'not read'),
              (f'{week}/REISSUE/USRE048400-20210105.ZIP', b'not read')]
  with tarfile.open(path, 'w') as tar:
    for name, data in members:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def copy_grant(folder: str, out_root: str, number: str, edit=lambda xml: xml) -> str:
  """A copy of a per-patent folder as patent D<number> (ids, file names and application number changed;
  ``edit`` changes the XML text further); returns the new folder."""
  import shutil
  stem = os.path.basename(folder)
  old_id, date = stem[2:].split('-')
  new_stem = f'USD{number}-{date}'
  dst = os.path.join(out_root, new_stem)
  os.makedirs(dst)
  for name in os.listdir(folder):
    if not name.upper().endswith('.XML'):
      shutil.copy(os.path.join(folder, name), os.path.join(dst, name.replace(stem, new_stem)))
  with open(os.path.join(folder, stem + '.XML'), encoding='utf-8') as f:
    xml = f.read()
  application = xml.split('<application-reference')[1].split('<doc-number>')[1].split('<')[0]
  xml = xml.replace(old_id, f'D{number}').replace(stem, new_stem).replace(application, '29' + number[1:])
  with open(os.path.join(dst, new_stem + '.XML'), 'w', encoding='utf-8') as f:
    f.write(edit(xml))
  return dst


def claim_priority(document: str, date: str):
  """An ``edit`` for copy_grant: the copy claims a priority (patents sharing one are one family)."""
  country, number = document[:2], document[2:]
  block = (f'<priority-claims><priority-claim sequence="01" kind="national"><country>{country}</country>'
           f'<doc-number>{number}</doc-number><date>{date}</date></priority-claim></priority-claims>')
  return lambda xml: xml.replace('</application-reference>', '</application-reference>\n' + block, 1)
