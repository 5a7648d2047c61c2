"""Ingestion at scale: resume after SIGKILL, worker count, refusal to overwrite, bad input, zip sources,
the record index, and the Beam path (where apache-beam is installed)."""

import ast
import csv
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import psutil
import pytest

from designclip_jax.data import ingest, pipeline
from designclip_jax.data.ingest import __main__ as ingest_cli
from designclip_jax.data.layout import CLASSES_FILE, REPORT_CSV, SPLITS
from designclip_jax.data.parallel import WorkerDied, ordered_map
from tests.ingest_cases import plant_bad_rows, square_or_die

ROWS, BLOCK, SIZE = 40, 10, 32


@pytest.fixture(scope='module')
def small_csv(synthetic_data, tmp_path_factory):
  """The first 40 rows of the session's synthetic set: (csv, raw dir)."""
  csv_path, raw_dir, _ = synthetic_data
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))[:ROWS]
  path = tmp_path_factory.mktemp('small') / 'synthetic.csv'
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return str(path), raw_dir


@pytest.fixture(scope='module')
def reference(small_csv, tmp_path_factory):
  """An uninterrupted one-process ingest of the small set."""
  out = str(tmp_path_factory.mktemp('reference') / 'out')
  ingest.ingest(*small_csv, out, image_size=SIZE, workers=1, rows_per_shard=BLOCK, progress=False)
  return out


def _contents(out):
  """Everything a reader sees: shard and metadata bytes, record index arrays, report, class table."""
  files = {}
  dataset_dir = pipeline.dataset_dir(out)
  for name in sorted(os.listdir(dataset_dir)):
    with open(os.path.join(dataset_dir, name), 'rb') as f:
      files[name] = hashlib.sha256(f.read()).hexdigest()
  for name in (REPORT_CSV, CLASSES_FILE):
    with open(os.path.join(out, name), 'rb') as f:
      files[name] = hashlib.sha256(f.read()).hexdigest()
  for split in SPLITS:
    index = pipeline.record_index(out, split)
    files[f'index-{split}'] = [index.patent_id.tolist(), index.label.tolist(), index.view_offsets.tolist(),
                               index.views.tolist()]
  return files


def _records(out):
  return {s: list(pipeline.eval_records(out, s)) for s in SPLITS}


def test_killed_ingest_resumes_to_identical_bytes_whatever_the_worker_count(small_csv, reference, tmp_path):
  out = str(tmp_path / 'out')
  cmd = [sys.executable, '-m', 'designclip_jax.data.ingest', '--csv', small_csv[0], '--images', small_csv[1],
         '--out', out, '--image-size', str(SIZE), '--workers', '2', '--rows-per-shard', str(BLOCK)]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first_block = os.path.join(out, ingest.WORK_DIR, 'block-000000.json')
  deadline = time.time() + 120
  while not os.path.exists(first_block) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  workers = [p for p in psutil.Process(proc.pid).children() if 'spawn_main' in ' '.join(p.cmdline())]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert os.path.exists(first_block) and not ingest.is_finished(out), 'the kill should land mid-way'
  _, alive = psutil.wait_procs(workers, timeout=30)
  assert len(workers) == 2 and not alive, 'the workers of a killed ingest must end with it'
  done_shard = os.path.join(out, ingest.WORK_DIR, 'block-000000.train.array_record')
  inode = os.stat(done_shard).st_ino
  ingest.ingest(*small_csv, out, image_size=SIZE, workers=1, rows_per_shard=BLOCK, progress=False)
  assert _contents(out) == _contents(reference)  # blocks by 2 workers, then by 1: the one-process bytes
  first_train_shard, = glob.glob(os.path.join(pipeline.dataset_dir(out), '*-train.array_record-00000-of-*'))
  assert os.stat(first_train_shard).st_ino == inode, 'the finished block was written again'


@pytest.fixture
def hang_guard():
  """Turns a hang (a lost task waited on forever) into a failure after 120 s."""
  def fail(*_):
    raise TimeoutError('hung for 120 s')
  previous = signal.signal(signal.SIGALRM, fail)
  signal.alarm(120)
  yield
  signal.alarm(0)
  signal.signal(signal.SIGALRM, previous)


def test_a_dead_worker_stops_the_map_naming_the_first_unfinished_item(hang_guard):
  results = []
  with pytest.raises(WorkerDied) as e:
    for r in ordered_map(square_or_die, range(40), workers=2):
      results.append(r)
  assert e.value.item <= 5 and results == [x * x for x in range(e.value.item)]


def test_a_killed_worker_stops_the_ingest_naming_the_block_and_the_same_command_resumes(small_csv, reference,
                                                                                        tmp_path):
  out = str(tmp_path / 'out')
  args = ['--csv', small_csv[0], '--images', small_csv[1], '--out', out, '--image-size', str(SIZE), '--workers', '2',
          '--rows-per-shard', str(BLOCK)]
  proc = subprocess.Popen([sys.executable, '-m', 'designclip_jax.data.ingest'] + args, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  first_block = os.path.join(out, ingest.WORK_DIR, 'block-000000.json')
  deadline = time.time() + 120
  while not os.path.exists(first_block) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  workers = [p for p in psutil.Process(proc.pid).children() if 'spawn_main' in ' '.join(p.cmdline())]
  assert len(workers) == 2 and proc.poll() is None, 'the kill should land mid-way'
  workers[0].send_signal(signal.SIGKILL)  # as the kernel's OOM killer does
  _, err = proc.communicate(timeout=120)
  last_line = err.strip().splitlines()[-1]
  assert proc.returncode == 1 and re.fullmatch(r'error: block [1-3]: a worker process died .*', last_line)
  assert 'run the same command again to resume' in last_line
  assert not ingest.is_finished(out) and os.path.exists(first_block)
  ingest_cli.main(args)  # the same command
  assert _contents(out) == _contents(reference)


def test_finished_output_is_refused_unless_overwrite(small_csv, reference, tmp_path, capsys):
  args = ['--csv', small_csv[0], '--images', small_csv[1], '--out', reference, '--image-size', str(SIZE)]
  with pytest.raises(SystemExit) as e:
    ingest_cli.main(args)
  assert 'already holds a finished data set' in str(e.value) and reference in str(e.value)
  out = str(tmp_path / 'out')
  ingest.ingest(*small_csv, out, image_size=SIZE, workers=1, rows_per_shard=BLOCK, progress=False)
  ingest_cli.main(['--csv', small_csv[0], '--images', small_csv[1], '--out', out, '--image-size', str(SIZE),
               '--workers', '1', '--rows-per-shard', str(BLOCK), '--overwrite'])
  assert _contents(out) == _contents(reference)
  assert 'rows_read: 40' in capsys.readouterr().out


def test_partial_ingest_with_other_settings_is_refused(small_csv, tmp_path):
  out = str(tmp_path / 'out')
  ingest.prepare_output(out, {'image_size': 64}, overwrite=False)
  with pytest.raises(ingest.IngestError, match='settings.json: a partial ingest with other settings'):
    ingest.ingest(*small_csv, out, image_size=SIZE, workers=1, progress=False)


def _bad_input(kind, small_csv, tmp_path):
  """(csv, images, the file the error must name) for one kind of bad input."""
  csv_path, raw_dir = small_csv
  if kind == 'not an IMPACT CSV':
    bad = tmp_path / 'other.csv'
    bad.write_text('name,value\na,1\n')
    return str(bad), raw_dir, str(bad)
  if kind == 'missing images path':
    return csv_path, str(tmp_path / 'nowhere'), str(tmp_path / 'nowhere')
  bad = tmp_path / 'drawings.zip'
  bad.write_bytes(b'PK\x03\x04 truncated')
  return csv_path, str(bad), str(bad)


@pytest.mark.parametrize('kind', ['not an IMPACT CSV', 'missing images path', 'unreadable zip'])
def test_bad_input_is_a_one_line_error_naming_the_file(kind, small_csv, tmp_path):
  csv_path, images, named = _bad_input(kind, small_csv, tmp_path)
  with pytest.raises(SystemExit) as e:
    ingest_cli.main(['--csv', csv_path, '--images', images, '--out', str(tmp_path / 'out')])
  message = str(e.value)
  assert message.startswith('error: ') and named in message and '\n' not in message


def test_failed_write_names_the_file_and_a_rerun_resumes(small_csv, reference, tmp_path, monkeypatch):
  from array_record.python import array_record_module
  real_writer = array_record_module.ArrayRecordWriter
  opened = []

  def writer_on_a_full_disk(path, options):
    opened.append(path)
    if len(opened) > 4:  # the first blocks fit, then the disk is full
      raise OSError(28, 'No space left on device', path)
    return real_writer(path, options)

  monkeypatch.setattr(array_record_module, 'ArrayRecordWriter', writer_on_a_full_disk)
  out = str(tmp_path / 'out')
  with pytest.raises(ingest.IngestError) as e:
    ingest.ingest(*small_csv, out, image_size=SIZE, workers=1, rows_per_shard=BLOCK, progress=False)
  assert opened[-1] in str(e.value) and 'No space left' in str(e.value)
  monkeypatch.setattr(array_record_module, 'ArrayRecordWriter', real_writer)
  ingest.ingest(*small_csv, out, image_size=SIZE, workers=1, rows_per_shard=BLOCK, progress=False)
  assert _contents(out) == _contents(reference)


def test_split_files_place_csv_rows_and_skip_unlisted_ones(small_csv, reference, tmp_path):
  """Published lists decide the splits (ids as written in the lists' own forms); unlisted rows are report rows."""
  with open(small_csv[0], newline='') as f:
    ids = [r['id'] for r in csv.DictReader(f)]
  lists = {'train': ids[:10], 'validation': ids[10:14], 'test': ids[14:20]}
  for split, members in lists.items():
    (tmp_path / f'{split}.txt').write_text(''.join(f'US{m}\n' for m in members))
  out = str(tmp_path / 'out')
  summary = ingest.ingest(*small_csv, out, image_size=SIZE, workers=1, rows_per_shard=BLOCK, progress=False,
                          split_files={s: str(tmp_path / f'{s}.txt') for s in lists})
  assert {s: [r['patent_id'] for r in records] for s, records in _records(out).items()} == lists
  assert summary['skipped_by_reason'] == {'not in any --split-file list': ROWS - 20}
  assert summary['split_rule'] == 'published split lists (--split-file)'
  reference_records = {r['patent_id']: r for records in _records(reference).values() for r in records}
  assert all(r == dict(reference_records[r['patent_id']], index=r['index'])
             for records in _records(out).values() for r in records)


def test_drawings_in_a_yearly_zip_beside_the_csv_give_the_same_records(small_csv, reference, tmp_path):
  """IMPACT ships 2021.csv with 2021.zip; here the zip holds 2021/<patent>/<sheet> (year folder)."""
  csv_path, raw_dir = small_csv
  folder = tmp_path / 'impact'
  folder.mkdir()
  shutil.copy(csv_path, folder / '2021.csv')
  with zipfile.ZipFile(folder / '2021.zip', 'w') as zf:
    for patent in sorted(os.listdir(raw_dir)):
      if os.path.isdir(os.path.join(raw_dir, patent)):
        for name in sorted(os.listdir(os.path.join(raw_dir, patent))):
          zf.write(os.path.join(raw_dir, patent, name), f'2021/{patent}/{name}')
  out = str(tmp_path / 'out')
  ingest.ingest(str(folder / '2021.csv'), str(folder), out, image_size=SIZE, workers=1, rows_per_shard=BLOCK,
                progress=False)
  assert _records(out) == _records(reference)


def test_record_index_matches_the_records(synthetic_data):
  """Also the family (a CSV has none: the patent itself) and the Locarno code of class_search[0]."""
  csv_path, _, data_dir = synthetic_data
  with open(csv_path, newline='') as f:
    locarno = {r['id']: ast.literal_eval(r['class_search'])[0] for r in csv.DictReader(f)}
  for split in SPLITS:
    index = pipeline.record_index(data_dir, split)
    records = list(pipeline.eval_records(data_dir, split))
    assert list(index.patent_id) == [r['patent_id'] for r in records]
    assert list(index.family) == list(index.patent_id)
    with np.load(os.path.join(data_dir, f'record_index-{split}.npz')) as z:
      assert list(z['locarno']) == [f'{locarno[p][:2]}-{locarno[p][2:]}' for p in index.patent_id]
    np.testing.assert_array_equal(index.label, [r['label'] for r in records])
    assert [index.view_ids(i).tolist() for i in range(len(index))] == [r['views'] for r in records]
    np.testing.assert_array_equal(index.num_views(), [len(r['images']) for r in records])


def test_beam_pipeline_gives_the_streaming_records_and_report(synthetic_data, tmp_path):
  pytest.importorskip('apache_beam', reason="apache-beam not installed (pip install '.[beam]')")
  from designclip_jax.data.ingest.beam import ingest_beam
  csv_path, raw_dir, _ = synthetic_data
  raw_copy = tmp_path / 'raw'
  shutil.copytree(raw_dir, raw_copy)
  bad_csv = str(tmp_path / 'bad.csv')
  expected, _ = plant_bad_rows(csv_path, str(raw_copy), bad_csv)
  streamed, beamed = str(tmp_path / 'streamed'), str(tmp_path / 'beamed')
  a = ingest.ingest(bad_csv, str(raw_copy), streamed, image_size=SIZE, workers=2, rows_per_shard=50, progress=False)
  b = ingest_beam(bad_csv, str(raw_copy), beamed, image_size=SIZE, rows_per_shard=50,
                  beam_options='--direct_num_workers=2 --direct_running_mode=multi_processing')
  assert _records(beamed) == _records(streamed)
  for name in (REPORT_CSV, CLASSES_FILE):
    with open(os.path.join(streamed, name)) as f, open(os.path.join(beamed, name)) as g:
      assert f.read() == g.read()
  with open(os.path.join(beamed, REPORT_CSV), newline='') as f:
    assert {(int(r['row']), r['patent_id']) for r in csv.DictReader(f)} == set(expected)
  assert {k: v for k, v in a.items() if k not in ('dataset_dir', 'issues')} == \
      {k: v for k, v in b.items() if k not in ('dataset_dir', 'issues')}
  for split in SPLITS:
    for field in ('patent_id', 'label', 'view_offsets', 'views', 'family'):
      np.testing.assert_array_equal(getattr(pipeline.record_index(beamed, split), field),
                                    getattr(pipeline.record_index(streamed, split), field))
