"""Label schemes (data.label = 'uspc' | 'locarno'): Locarno codes from IMPACT's class_search and the class table
at ingest, the sampler, loss weights, fusion head and zero-shot prompts of a run trained on Locarno, each against
a NumPy recomputation from the CSV the data set was ingested from."""

import ast
import csv
import json
import os
import sys

import numpy as np
import pytest

from designclip_jax.data import ingest, pipeline
from designclip_jax.data.classes import LOCARNO, NO_LABEL, USPC, label_scheme, locarno_class_index
from designclip_jax.data.layout import CLASSES_FILE, REPORT_JSON

BETA_SAMPLE, BETA_LOSS = 1.2, 0.7  # unequal, so a weight taken from the wrong one shows


def _csv_rows(path) -> list[dict]:
  csv.field_size_limit(sys.maxsize)
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def _locarno_class(row: dict) -> str:
  """The Locarno class IMPACT's class_search names (its first entry, 'CCSS'); '' when it names none."""
  codes = ast.literal_eval(row['class_search'])
  return codes[0][:2] if codes else ''


def test_locarno_classes_are_wipos_with_their_names():
  assert len(LOCARNO) == 33 and LOCARNO.codes == tuple(f'{c:02d}' for c in range(1, 33)) + ('99',)
  names = dict(zip(LOCARNO.codes, LOCARNO.names))
  assert names['01'] == 'Foodstuffs' and names['02'] == 'Articles of clothing and haberdashery'
  assert names['14'] == 'Recording, telecommunication or data processing equipment'
  assert names['28'] == 'Pharmaceutical and cosmetic products, toilet articles and apparatus'
  assert names['32'] == 'Graphic symbols and logos, surface patterns, ornamentation'
  assert len(set(LOCARNO.names)) == 33
  assert LOCARNO.codes[locarno_class_index('28-03')] == '28' and locarno_class_index('') == NO_LABEL
  assert label_scheme('uspc') is USPC and label_scheme('locarno') is LOCARNO
  with pytest.raises(ValueError, match="label scheme 'ipc' is not one of"):
    label_scheme('ipc')
  with pytest.raises(ValueError, match='Locarno class 45'):
    locarno_class_index('45-01')


def test_an_impact_csv_gives_the_locarno_class_its_class_search_names(impact_sample, tmp_path):
  """The 35 real IMPACT rows ingested: every record's Locarno code is class_search[0] ('0202' -> 02-02) and its
  Locarno label that class; classes.json's Locarno train counts are those of the train records."""
  rows = {r['id']: r for r in _csv_rows(impact_sample / 'sample_data.csv')}
  ingest.ingest(str(impact_sample / 'sample_data.csv'), str(impact_sample), str(tmp_path), image_size=32,
                workers=1, progress=False)
  seen = {}
  for split in ('train', 'validation', 'test'):
    try:
      index = pipeline.record_index(str(tmp_path), split)
    except FileNotFoundError:
      continue  # 35 patents: a split may be empty
    codes = [ast.literal_eval(rows[p]['class_search'])[0] for p in index.patent_id]
    assert list(index.locarno) == [f'{c[:2]}-{c[2:]}' for c in codes]
    assert [LOCARNO.codes[i] for i in index.labels('locarno')] == [c[:2] for c in codes]
    seen.update(zip(index.patent_id, index.locarno))
    if split == 'train':
      expected = np.bincount([LOCARNO.codes.index(c[:2]) for c in codes], minlength=33)
      table = pipeline.label_table(str(tmp_path), 'locarno')
      assert table['train_counts'] == expected.tolist() and table['train_without_label'] == 0
      assert table['names'] == list(LOCARNO.names)
  assert len(seen) == 35
  # checked by hand in sample_data.csv: a razor (2803), shoes (0204), a brush with a bowl (0499)
  assert (seen['D0907292'], seen['D0923318'], seen['D0939222']) == ('28-03', '02-04', '04-99')


@pytest.fixture(scope='module')
def locarno_data(synthetic_data, tmp_path_factory):
  """The session's synthetic patents with every seventh row's class_search emptied (a patent without Locarno),
  ingested: (data dir, {patent id: Locarno class from the CSV, '' for none})."""
  csv_path, raw_dir, _ = synthetic_data
  rows = _csv_rows(csv_path)
  for i, row in enumerate(rows):
    if i % 7 == 3:
      row['class_search'] = '[]'
  root = tmp_path_factory.mktemp('locarno')
  edited = root / 'without_some_locarno.csv'
  with open(edited, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  ingest.ingest(str(edited), raw_dir, str(root / 'data'), image_size=64, workers=2, tokenizer_vocab=512,
                context_length=32, progress=False)
  return str(root / 'data'), {r['id']: _locarno_class(r) for r in rows}


def _expected_labels(index, locarno_of) -> np.ndarray:
  return np.array([LOCARNO.codes.index(locarno_of[p]) if locarno_of[p] else NO_LABEL for p in index.patent_id])


def test_ingest_writes_both_schemes_and_counts_records_without_locarno(locarno_data):
  data_dir, locarno_of = locarno_data
  index = pipeline.record_index(data_dir, 'train')
  expected = _expected_labels(index, locarno_of)
  np.testing.assert_array_equal(index.labels('locarno'), expected)
  np.testing.assert_array_equal(index.labels('uspc'), index.label)  # the USPC labels as before
  table = json.loads(open(os.path.join(data_dir, CLASSES_FILE)).read())
  assert table['codes'] == list(USPC.codes) and table['train_counts'] == np.bincount(index.label, minlength=33).tolist()
  assert table['locarno']['train_counts'] == np.bincount(expected[expected >= 0], minlength=33).tolist()
  assert table['locarno']['train_without_label'] == int((expected == NO_LABEL).sum()) > 0
  report = json.loads(open(os.path.join(data_dir, REPORT_JSON)).read())
  assert report['records_without_locarno'] == sum(1 for p in _all_ids(data_dir) if not locarno_of[p])


def _all_ids(data_dir):
  return [p for s in ('train', 'validation', 'test') for p in pipeline.record_index(data_dir, s).patent_id]


def test_sampler_never_draws_a_record_without_locarno_and_weights_follow_locarno_counts(locarno_data):
  """TrainTransform with label='locarno': draw probabilities P(i) ∝ (n_c/N)^-β_sample (0 without a Locarno
  code) and loss weights (n_c/N)^-β_loss, from the CSV's Locarno classes of the train records."""
  from designclip_jax.data.tokenizer import Tokenizer
  data_dir, locarno_of = locarno_data
  labels = _expected_labels(pipeline.record_index(data_dir, 'train'), locarno_of)
  labelled = labels >= 0
  counts = np.bincount(labels[labelled], minlength=33).astype(np.float64)
  share = counts / counts.sum()
  with np.errstate(divide='ignore'):
    weight = np.where(counts > 0, share ** -BETA_LOSS, 0.0)
    p = np.where(labelled, share[np.maximum(labels, 0)] ** -BETA_SAMPLE, 0.0)
  opts = pipeline.TrainOptions(image_size=32, global_batch=8, beta_sample=BETA_SAMPLE, beta_loss=BETA_LOSS,
                               label='locarno')
  transform = pipeline.TrainTransform(data_dir, opts, Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32))
  np.testing.assert_allclose(np.diff(transform.cdf, prepend=0.0), p / p.sum(), rtol=1e-9, atol=1e-15)
  np.testing.assert_allclose(transform.loss_weights, weight, rtol=1e-6)
  # the USPC sampler of the same records differs: the scheme is what is followed
  uspc = pipeline.TrainTransform(data_dir, pipeline.TrainOptions(image_size=32, global_batch=8, beta_sample=BETA_SAMPLE,
                                                                 beta_loss=BETA_LOSS), transform.tokenizer)
  assert np.abs(uspc.cdf - transform.cdf).max() > 1e-3


@pytest.fixture(scope='module')
def locarno_run(locarno_data, tmp_path_factory):
  """4 steps of the micro model with data.label='locarno', zero-shot evaluated on the test split; every local
  batch the run fed its step is recorded."""
  from designclip_jax.train import loop
  from tests.train_helpers import micro_config
  data_dir, _ = locarno_data
  workdir = tmp_path_factory.mktemp('locarno_run')
  config = micro_config(data_dir, steps=4, checkpoint_every=4)
  config.data.label = 'locarno'
  config.loss.beta_sample, config.loss.beta_loss = BETA_SAMPLE, BETA_LOSS
  config.eval.tasks = ('zero_shot',)
  seen = []
  real = loop.sharding.host_local_to_global

  def recording(local, mesh):
    seen.append({k: np.array(local[k]) for k in ('label', 'weight', 'record', 'family')})
    return real(local, mesh)

  loop.sharding.host_local_to_global = recording
  try:
    result = loop.train_and_evaluate(config, str(workdir))
  finally:
    loop.sharding.host_local_to_global = real
  return config, str(workdir), result, seen


def test_a_locarno_run_trains_on_locarno_classes_with_a_head_of_that_scheme(locarno_data, locarno_run):
  """Every example the run's steps saw: the Locarno class of its record (CSV), the loss weight of that class
  (NumPy from the CSV's train counts), never a record without Locarno, its family's number; model.json and the
  checkpoint's head: the Locarno scheme's classes; a resume with data.label='uspc' is refused."""
  from designclip_jax.train import loop
  from designclip_jax.weights.model_spec import ModelSpec, ResumeMismatchError
  data_dir, locarno_of = locarno_data
  config, workdir, _, seen = locarno_run
  index = pipeline.record_index(data_dir, 'train')
  labels = _expected_labels(index, locarno_of)
  counts = np.bincount(labels[labels >= 0], minlength=33)
  families = np.unique(index.family)
  assert len(seen) == 4
  for batch in seen:
    records = batch['record']
    assert (labels[records] >= 0).all()
    np.testing.assert_array_equal(batch['label'], labels[records])
    np.testing.assert_allclose(batch['weight'], (counts[labels[records]] / counts.sum()) ** -BETA_LOSS, rtol=1e-6)
    np.testing.assert_array_equal(families[batch['family']], index.family[records])
  spec = ModelSpec.load(workdir)
  assert (spec.label, spec.num_classes) == ('locarno', len(LOCARNO))
  from tests.test_train import _final_params
  params, _ = _final_params(workdir)
  assert params['head']['classifier']['kernel'].shape[-1] == len(LOCARNO)
  uspc = config.copy_and_resolve_references()
  uspc.data.label = 'uspc'
  uspc.train.steps = 5
  with pytest.raises(ResumeMismatchError, match="data.label='locarno'"):
    loop.train_and_evaluate(uspc, workdir)


def test_zero_shot_on_locarno_names_against_numpy(locarno_data, locarno_run, tmp_path):
  """The run's zero-shot (prompts 'a sketch of {Locarno class name}') against a float64 recomputation from the
  trained towers' embeddings and the CSV's Locarno classes, records without one left out and counted; the eval
  CLI reads the scheme from the run's model.json, and --label uspc scores the USPC classes instead."""
  from designclip_jax.eval import runner
  from designclip_jax.eval.__main__ import main as eval_main
  from designclip_jax.eval.embed import embed_images, embed_texts
  from designclip_jax.weights.loader import load_model
  data_dir, locarno_of = locarno_data
  _, workdir, result, _ = locarno_run
  clip, tokenizer, normalization = load_model(workdir)
  index = pipeline.record_index(data_dir, 'test')
  labels = _expected_labels(index, locarno_of)
  labelled = labels >= 0
  images = runner.SplitImages(pipeline.open_split(data_dir, 'test'), [(i, 0) for i in range(len(index))])
  image = embed_images(clip, images, normalization=normalization, progress=False).astype(np.float64)
  prompts = embed_texts(clip, tokenizer, [f'a sketch of {name}' for name in LOCARNO.names], progress=False)
  image /= np.linalg.norm(image, axis=1, keepdims=True)
  prompts = prompts.astype(np.float64) / np.linalg.norm(prompts, axis=1, keepdims=True)
  correct = (image[labelled] @ prompts.T).argmax(1) == labels[labelled]
  present = np.unique(labels[labelled])
  balanced = np.mean([correct[labels[labelled] == c].mean() for c in present])
  assert result['records_without_label'] == int((~labelled).sum()) > 0
  assert result['top1'] == pytest.approx(correct.mean(), abs=1e-12)
  assert result['balanced_acc'] == pytest.approx(balanced, abs=1e-12)
  out = tmp_path / 'zero_shot.json'
  eval_main(['--checkpoint', workdir, '--data', data_dir, '--task', 'zero_shot', '--output', str(out)])
  scores = json.loads(out.read_text())
  assert (scores['top1'], scores['records_without_label']) == (result['top1'], result['records_without_label'])
  eval_main(['--checkpoint', workdir, '--data', data_dir, '--task', 'zero_shot', '--label', 'uspc',
             '--output', str(out)])
  assert json.loads(out.read_text())['records_without_label'] == 0


def test_label_applies_to_a_data_set_only(tmp_path):
  from designclip_jax.eval.__main__ import UsageError, parse_args, run
  npz = tmp_path / 'e.npz'
  np.savez(npz, image=np.eye(3), labels=np.arange(3), class_embeddings=np.eye(3))
  with pytest.raises(UsageError, match='--label names the classes of a --data set'):
    run(parse_args(['--embeddings', str(npz), '--task', 'zero_shot', '--label', 'locarno']))
