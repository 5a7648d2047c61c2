"""gs:// for real (issue 21 item 1): a user's whole run with every path in a bucket, on gcp-storage-emulator
(tests/gcs_emulator.py), which each client reaches through its own standard variable, so nothing of the product is
mocked or special-cased. Ingestion from a bucket's CSV, split lists and drawings (folders, a zip) into the bucket;
training from the bucket's data set and an HF directory in the bucket, into a bucket workdir, stopped by SIGTERM
and resumed by the same command; evaluation and a search index written to the bucket, and a query from it; the
Beam path reading the bucket's inputs. Each result is compared with the same work done on local folders, which the
other tests check against their references: byte-identical data sets, parameters, scores and hits."""

import ast
import csv
import hashlib
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from designclip_jax.data import ingest, pipeline
from designclip_jax.data.layout import CLASSES_FILE, REPORT_CSV, SPLITS
from tests.gcs_emulator import BUCKET, clients_pointed_at, emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, BLOCK, SIZE = 16, 4, 64
SPLIT_ROWS = {'train': slice(0, 10), 'validation': slice(10, 12), 'test': slice(12, 16)}
STEPS = 24
URL = f'gs://{BUCKET}'


def _upload(local: str, url: str) -> None:
  """Every file under the local folder ``local`` to the same relative names under ``url``."""
  from etils import epath
  for folder, _, files in os.walk(local):
    for name in files:
      path = os.path.join(folder, name)
      epath.Path(path).copy(epath.Path(url, os.path.relpath(path, local)), overwrite=True)


def _read(path) -> bytes:
  from etils import epath
  return epath.Path(path).read_bytes()


def _contents(out):
  """What a reader of the data set sees: shard and metadata bytes, report, class table, record index, tokenizer."""
  from etils import epath
  dataset_dir = pipeline.dataset_dir(out)
  files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in epath.Path(dataset_dir).iterdir()}
  files.update({name: hashlib.sha256(_read(os.path.join(out, name))).hexdigest() for name in (REPORT_CSV, CLASSES_FILE)})
  files['tokenizer'] = sorted(p.name for p in epath.Path(pipeline.tokenizer_dir(out)).iterdir())
  for split in SPLITS:
    index = pipeline.record_index(out, split)
    files[f'index-{split}'] = [index.patent_id.tolist(), index.label.tolist(), index.view_offsets.tolist(),
                               index.views.tolist(), index.family.tolist()]
  return files


@pytest.fixture(scope='module')
def gcs():
  """The emulator, with this process's clients (and every subprocess's) pointed at it."""
  for module, extra in (('gcp_storage_emulator', 'test'), ('gcsfs', 'gcs')):  # not imported: see clients_pointed_at
    if importlib.util.find_spec(module) is None:
      pytest.skip(f"{module} not installed (pip install '.[{extra}]')")
  with emulator(BUCKET) as endpoint, clients_pointed_at(endpoint):
    yield endpoint


@pytest.fixture(scope='module')
def inputs(synthetic_data, gcs, tmp_path_factory):
  """The session's first 16 synthetic patents as IMPACT ships them, locally and in the bucket: the CSV, a folder
  per patent (raw/), the same folders in one zip (zipped/synthetic.zip, paired with the CSV by name) and split
  lists. Returns {'local': {...}, 'gs': {...}} of csv, raw, zipped, splits."""
  del gcs
  csv_path, raw_dir, _ = synthetic_data
  root = tmp_path_factory.mktemp('gcs-inputs')
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))[:ROWS]
  os.makedirs(root / 'csv')
  with open(root / 'csv' / 'synthetic.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  os.makedirs(root / 'raw')
  os.makedirs(root / 'zipped')
  with zipfile.ZipFile(root / 'zipped' / 'synthetic.zip', 'w') as zf:
    for row in rows:
      stem = ast.literal_eval(row['file_names'])[0].rsplit('-D', 1)[0]  # IMPACT's folder per patent
      os.makedirs(root / 'raw' / stem)
      for name in sorted(os.listdir(os.path.join(raw_dir, stem))):
        with open(os.path.join(raw_dir, stem, name), 'rb') as f:
          data = f.read()
        (root / 'raw' / stem / name).write_bytes(data)
        zf.writestr(f'{stem}/{name}', data)
  os.makedirs(root / 'splits')
  for split, part in SPLIT_ROWS.items():
    (root / 'splits' / f'{split}.txt').write_text(''.join(r['id'] + '\n' for r in rows[part]))
  _upload(str(root), f'{URL}/inputs')
  where = lambda base: {'csv': f'{base}/csv/*.csv', 'raw': f'{base}/raw', 'zipped': f'{base}/zipped',
                        'splits': {s: f'{base}/splits/{s}.txt' for s in SPLITS}}
  return {'local': where(str(root)), 'gs': where(f'{URL}/inputs')}


def _ingest(source: dict, images: str, out: str, **options):
  return ingest.ingest(source['csv'], images, out, image_size=SIZE, workers=1, rows_per_shard=BLOCK, progress=False,
                       tokenizer_vocab=512, context_length=32, split_files=source['splits'], **options)


@pytest.fixture(scope='module')
def datasets(inputs, tmp_path_factory):
  """The same patents ingested from local folders to a local folder, and from the bucket to the bucket."""
  local = str(tmp_path_factory.mktemp('gcs-local') / 'data')
  _ingest(inputs['local'], inputs['local']['raw'], local)
  _ingest(inputs['gs'], inputs['gs']['raw'], f'{URL}/data')
  return local, f'{URL}/data'


def test_ingest_from_the_bucket_into_the_bucket_equals_a_local_ingest(datasets):
  local, url = datasets
  assert _contents(url) == _contents(local)
  assert {s: len(pipeline.record_index(url, s)) for s in SPLITS} == {'train': 10, 'validation': 2, 'test': 4}
  from etils import epath
  assert not epath.Path(url, ingest.WORK_DIR).exists()  # the work folder is gone once the data set is finished


def test_ingest_of_a_bucket_zip_stopped_by_a_full_disk_resumes_from_the_bucket(inputs, datasets, monkeypatch):
  """The drawings in one zip in the bucket; the local disk that ArrayRecord writes each block to fills in the third
  block: the error names the local file, the bucket keeps the two finished blocks, and a rerun writes the others."""
  from array_record.python import array_record_module
  from etils import epath
  real_writer, opened = array_record_module.ArrayRecordWriter, []

  def writer(path, options, full_after=None):
    opened.append(os.path.basename(path))
    if full_after is not None and len(opened) > full_after:
      raise OSError(28, 'No space left on device', path)
    return real_writer(path, options)

  out = f'{URL}/data-from-zip'
  monkeypatch.setattr(array_record_module, 'ArrayRecordWriter', lambda *a: writer(*a, full_after=2))
  with pytest.raises(ingest.IngestError) as e:
    _ingest(inputs['gs'], inputs['gs']['zipped'], out)
  named = str(e.value).split(':')[0]
  assert 'No space left' in str(e.value) and os.path.basename(named) == opened[-1] and os.path.isabs(named)
  assert sorted(p.name for p in epath.Path(out, ingest.WORK_DIR).glob('block-*')) == [
      'block-000000.json', 'block-000000.train.array_record', 'block-000001.json', 'block-000001.train.array_record']
  opened.clear()
  monkeypatch.setattr(array_record_module, 'ArrayRecordWriter', writer)
  _ingest(inputs['gs'], inputs['gs']['zipped'], out)
  assert opened == ['block-000002.train.array_record.tmp', 'block-000002.validation.array_record.tmp',
                    'block-000003.test.array_record.tmp']
  assert _contents(out) == _contents(datasets[0])


def test_beam_ingest_reads_the_buckets_inputs_as_the_streaming_path_does(inputs, datasets, tmp_path):
  """DirectRunner in worker processes, which reach the emulator through the variables they inherit."""
  pytest.importorskip('apache_beam', reason="apache-beam not installed (pip install '.[beam]')")
  from designclip_jax.data.ingest.beam import ingest_beam
  beamed = str(tmp_path / 'beamed')
  ingest_beam(inputs['gs']['csv'], inputs['gs']['raw'], beamed, image_size=SIZE, rows_per_shard=BLOCK,
              tokenizer_vocab=512, context_length=32, split_files=inputs['gs']['splits'],
              beam_options='--direct_num_workers=2 --direct_running_mode=multi_processing')
  records = lambda out: {s: list(pipeline.eval_records(out, s)) for s in SPLITS}
  assert records(beamed) == records(datasets[0])
  shards = lambda files: {k for k in files if '.array_record-' in k}  # Beam cuts its own shards
  beam_contents, streamed_contents = _contents(beamed), _contents(datasets[0])
  for name in shards(beam_contents) | shards(streamed_contents):
    beam_contents.pop(name, None), streamed_contents.pop(name, None)
  beam_contents.pop('dataset_info.json'), streamed_contents.pop('dataset_info.json')  # shard lengths
  assert beam_contents == streamed_contents  # report, class table, record index, tokenizer, features


def _train_cli(data_dir: str, workdir: str, init: str) -> list[str]:
  return [sys.executable, '-m', 'designclip_jax.train', '--config', f'{ROOT}/tests/train_helpers.py:{data_dir}',
          '--workdir', workdir, f'--config.model.init={init}', '--config.model.pixel_normalization=clip',
          f'--config.train.steps={STEPS}', '--config.train.checkpoint_every=8']


def _params(workdir: str):
  """The latest checkpoint's model parameters, as numpy arrays by path."""
  import jax
  from flax import nnx
  from designclip_jax import sharding
  from designclip_jax.weights import run_checkpoints
  from designclip_jax.weights.model_spec import ModelSpec
  mngr = run_checkpoints.manager(workdir, keep=None, read_only=True)
  graphdef, abstract = nnx.split(nnx.eval_shape(ModelSpec.load(workdir).build))
  del graphdef
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  state, _, meta = run_checkpoints.restore(mngr, mngr.latest_step(), abstract, sharding.state_shardings(abstract, mesh))
  mngr.close()
  return dict(jax.tree_util.tree_flatten_with_path(jax.device_get(nnx.to_pure_dict(state)))[0]), meta['step']


@pytest.fixture(scope='module')
def runs(datasets, tmp_path_factory):
  """A run in the bucket (data, model.init and workdir there) through the train CLI, stopped by SIGTERM and resumed
  by the same command; and the same run trained straight through on local folders, in this process. Returns
  (local workdir, bucket workdir, the two attempts' outputs)."""
  pytest.importorskip('torch')
  from designclip_jax.data.tokenizer import Tokenizer
  from designclip_jax.train import loop
  from tests.train_helpers import micro_config, pretrained_checkpoint
  local_data, url_data = datasets
  root = tmp_path_factory.mktemp('gcs-runs')
  init = pretrained_checkpoint('hf', root, Tokenizer.from_pretrained(pipeline.tokenizer_dir(local_data), 32))
  _upload(init, f'{URL}/hf')
  workdir, command = f'{URL}/run', _train_cli(url_data, f'{URL}/run', f'{URL}/hf')
  from etils import epath
  metrics = epath.Path(workdir, 'metrics.jsonl')
  with open(root / 'first.log', 'w+') as log:
    proc = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
      deadline = time.monotonic() + 300
      while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):  # training is under way
        assert time.monotonic() < deadline and proc.poll() is None, (log.seek(0), log.read()[-3000:])
        time.sleep(0.1)
      os.killpg(proc.pid, signal.SIGTERM)
      proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
      if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    log.seek(0)
    first = log.read()
  assert proc.returncode == loop.PREEMPTED_EXIT_CODE, first[-3000:]
  second = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
  assert second.returncode == 0, second.stderr[-3000:]
  assert not (root / 'gs:').exists()  # nothing written to a local folder named like the URL

  config = micro_config(local_data, steps=STEPS, checkpoint_every=8)
  config.model.init, config.model.pixel_normalization = init, 'clip'
  loop.train_and_evaluate(config, str(root / 'run'))
  return str(root / 'run'), workdir, (first, second.stdout)


def test_train_in_the_bucket_stopped_by_sigterm_and_resumed_equals_a_local_straight_run(runs):
  """Orbax's checkpoints, metrics.jsonl, TensorBoard, model.json and the tokenizer all in the bucket; the resumed
  run's parameters equal the local uninterrupted run's exactly (the stream is a function of the step)."""
  from etils import epath
  local, url, (first, second) = runs
  stopped = int(next(line for line in first.splitlines() if line.startswith('preempted: saved step')).split()[3][:-1])
  assert 2 <= stopped < STEPS
  assert f'resumed from step {stopped} ({url}/checkpoints/{stopped})' in second
  bucket_params, bucket_step = _params(url)
  local_params, local_step = _params(local)
  assert bucket_step == local_step == STEPS and bucket_params.keys() == local_params.keys()
  for key, value in local_params.items():
    np.testing.assert_array_equal(bucket_params[key], value, err_msg=str(key))
  lines = lambda run: [json.loads(line) for line in epath.Path(run, 'metrics.jsonl').read_text().splitlines()]
  steps = lambda run: [r['step'] for r in lines(run) if 'loss' in r]
  assert steps(url) == steps(local) == list(range(1, STEPS + 1))  # no step twice after the resume
  assert [r['loss'] for r in lines(url) if 'loss' in r] == [r['loss'] for r in lines(local) if 'loss' in r]
  events = list(epath.Path(url, 'tensorboard').iterdir())
  assert len(events) == 2 and all(p.stat().length > 0 for p in events)  # one event file per start
  assert sorted(int(p.name) for p in epath.Path(url, 'checkpoints').iterdir() if p.name.isdigit()) == sorted(
      {8, 16, 24, stopped})
  assert sorted(p.name for p in epath.Path(url, 'tokenizer').iterdir()) == sorted(os.listdir(f'{local}/tokenizer'))


def test_eval_of_the_bucket_run_writes_the_local_runs_scores_to_the_bucket(runs, datasets, tmp_path, monkeypatch):
  from designclip_jax.eval.__main__ import main as eval_main
  local, url, _ = runs
  monkeypatch.chdir(tmp_path)  # where a URL taken for a local path would land
  task = ['--task', 'zero_shot', 'image_retrieval', '--split', 'test']
  eval_main(['--checkpoint', url, '--data', datasets[1], *task, '--output', f'{URL}/eval/test.json'])
  eval_main(['--checkpoint', local, '--data', datasets[0], *task, '--output', str(tmp_path / 'test.json')])
  in_bucket = json.loads(_read(f'{URL}/eval/test.json'))
  here = json.loads((tmp_path / 'test.json').read_text())
  numbers = lambda scores: {k: v for k, v in scores.items() if isinstance(v, (int, float))}
  assert {'top1', 'mAP'} <= numbers(here).keys() and numbers(in_bucket) == numbers(here)
  assert in_bucket['provenance']['data']['fingerprint'] == here['provenance']['data']['fingerprint']
  assert not (tmp_path / 'gs:').exists()


def test_search_index_in_the_bucket_answers_a_query_as_the_local_index_does(runs, datasets, inputs, tmp_path,
                                                                             monkeypatch):
  pytest.importorskip('pyarrow')
  from designclip_jax.search.__main__ import main as search_main
  local, url, _ = runs
  monkeypatch.chdir(tmp_path)
  search_main(['index', '--checkpoint', url, '--data', datasets[1], '--out', f'{URL}/index', '--split', 'test'])
  search_main(['index', '--checkpoint', local, '--data', datasets[0], '--out', str(tmp_path / 'index'),
               '--split', 'test'])
  drawing = sorted(glob_files(inputs['local']['raw']))[0]
  query = ['--image', drawing, '--text', 'a chair with four legs', '--top', '4', '--target', 'all']
  search_main(['query', '--index', f'{URL}/index', *query, '--json', f'{URL}/query.json'])
  search_main(['query', '--index', str(tmp_path / 'index'), *query, '--json', str(tmp_path / 'query.json')])
  hits = lambda raw: [(h['patent_id'], h.get('view'), round(h['score'], 5)) for h in json.loads(raw)['hits']]
  assert len(hits((tmp_path / 'query.json').read_text())) == 4
  assert hits(_read(f'{URL}/query.json')) == hits((tmp_path / 'query.json').read_text())
  assert not (tmp_path / 'gs:').exists()


def glob_files(folder: str) -> list[str]:
  return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files]
