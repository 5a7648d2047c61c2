"""Data: IMPACT parsing, views, classes, synthetic set, ingestion report, splits, Grain pipeline."""

import ast
import csv
import hashlib
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from designclip_jax.data import images as image_ops
from designclip_jax.data import ingest, pipeline, synthetic
from designclip_jax.data.classes import CLASS_CODES, class_index
from designclip_jax.data.impact import parse_row, parse_view
from designclip_jax.data.layout import REPORT_CSV, REPORT_JSON, SPLITS
from designclip_jax.data.synthetic_articles import LOCARNO, class_counts
from designclip_jax.data.synthetic_drawing import sample_object
from designclip_jax.data.tokenizer import Tokenizer
from tests.ingest_cases import plant_bad_rows

VIEW_CASES = {
    'FIG. 1 is a front left perspective view of a shoe showing my new design;': 'perspective',
    'FIG. 2 is a front view thereof;': 'front',
    'FIG. 3 is a rear elevational view thereof;': 'rear',
    'FIG. 3 is a back view of the shoe midsole and outsole of FIG. 1 .': 'rear',
    'FIG. 4 is a left side view thereof;': 'left',
    'FIG. 5 is a right side elevational view thereof;': 'right',
    'FIG. 6 is a top plan view thereof;': 'top',
    'FIG. 7 is a bottom plan view thereof.': 'bottom',
    'FIG. 2 is a side view thereof;': 'side',
    'FIG. 4 is an opposite side rear perspective view thereof; and,': 'perspective',
    'FIG. 8 is a cross-sectional view taken along line 8-8 of FIG. 2;': 'unknown',
    'FIG. 9 is an enlarged detail view of FIG. 1;': 'unknown',
    'The FIGURE is a from view of a display screen with a graphical user interface.': 'unknown',
    'FIG. 1 is an isometric view of a bracket;': 'perspective',
}


@pytest.mark.parametrize('text,view', sorted(VIEW_CASES.items()))
def test_fig_desc_views(text, view):
  assert parse_view(text) == view


@pytest.mark.parametrize('text,code', [('D14486', 'D14'), ('D 2728, D2840', 'D2'), ('D 4138,D30159', 'D4'),
                                       ('D99 28', 'D99'), ('D12209', 'D12'), ('D34  1', 'D34')])
def test_uspc_class_strings(text, code):
  assert CLASS_CODES[class_index(text)] == code


@pytest.mark.parametrize('text', ['D31123', 'D33 10', '455  302', '', 'X14486'])
def test_uspc_class_errors(text):
  with pytest.raises(ValueError):
    class_index(text)


def test_real_impact_rows_parse(impact_sample):
  with open(impact_sample / 'sample_data.csv', newline='') as f:
    rows = [parse_row(r) for r in csv.DictReader(f)]
  assert len(rows) == 35
  by_id = {r.patent_id: r for r in rows}
  # 8 sheets for 8 figures: one figure per sheet, views in FIG order after the front-page drawing
  assert by_id['D0918440'].mapping == 'one_figure_per_sheet'
  assert by_id['D0918440'].image_views == ['unknown', 'perspective', 'front', 'rear', 'left', 'right', 'top',
                                           'bottom']
  # 7 figures on 5 sheets: which figure is on which sheet is unknown
  assert by_id['D0939222'].mapping == 'ambiguous'
  assert set(by_id['D0939222'].image_views) == {'unknown'}
  assert by_id['D0911448'].class_code == 'D21' and by_id['D0939222'].class_code == 'D4'


def test_real_sheets_are_cropped_without_the_figure_label(impact_sample):
  sheet = image_ops.load_gray(str(impact_sample / 'USD0907292-20210105' / 'USD0907292-20210105-D00001.TIF'))
  gray = np.asarray(sheet)
  ink_rows = np.flatnonzero((gray < 128).any(axis=1))
  top, bottom, left, right = image_ops.drawing_box(gray)
  assert bottom < ink_rows[-1] - 50, 'the "Fig. 1" label at the foot of the sheet should be cut off'
  inside = (gray[top:bottom, left:right] < 128).sum()
  assert inside > 0.95 * ((gray < 128).sum() - (gray[bottom:] < 128).sum())
  square = image_ops.preprocess_sheet(sheet, 224)
  assert square.shape == (224, 224) and square.dtype == np.uint8
  assert (square < 128).mean() > 0.01, 'thin lines must survive the ~10x reduction'
  assert square[0].min() > 200 and square[-1].min() > 200  # white margins


def test_png_and_tiff_drawings_preprocess_identically(tmp_path):
  import io
  from PIL import Image
  _, files = synthetic.make_patent(0, 3, seed=0)
  tiff = next(iter(files.values()))
  png = io.BytesIO()
  Image.open(io.BytesIO(tiff)).save(png, format='PNG')
  a = image_ops.preprocess_sheet(image_ops.load_gray(tiff), 96)
  b = image_ops.preprocess_sheet(image_ops.load_gray(png.getvalue()), 96)
  np.testing.assert_array_equal(a, b)
  assert (a < 128).any()


def test_real_sample_ingests_with_every_row_accounted_for(impact_sample, tmp_path):
  summary = ingest.ingest(str(impact_sample / 'sample_data.csv'), str(impact_sample), str(tmp_path),
                          image_size=64, workers=1, progress=False)
  ingested = sum(summary['patents_ingested'].values())
  assert ingested + summary['rows_skipped'] == summary['rows_read'] == 35
  assert sum(summary['sheet_to_figure_mapping'].values()) == 35
  rec = next(pipeline.eval_records(str(tmp_path), 'train'))
  assert len(rec['images']) == len(rec['views']) and image_ops.decode_png(rec['images'][0]).shape == (64, 64)


def _tree_digest(folder):
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      h.update(name.encode())
      with open(os.path.join(root, name), 'rb') as f:
        h.update(f.read())
  return h.hexdigest()


def test_synthetic_set_is_byte_identical_for_a_seed_and_long_tailed(tmp_path):
  a = synthetic.generate(str(tmp_path / 'a'), 99, seed=5, workers=1, progress=False)
  b = synthetic.generate(str(tmp_path / 'b'), 99, seed=5, workers=2, progress=False)
  assert _tree_digest(os.path.dirname(a)) == _tree_digest(os.path.dirname(b))
  c = synthetic.generate(str(tmp_path / 'c'), 99, seed=6, workers=1, progress=False)
  assert _tree_digest(os.path.dirname(a)) != _tree_digest(os.path.dirname(c))
  counts = class_counts(20000)
  assert counts.sum() == 20000 and 40 <= counts.max() / counts.min() <= 70


def test_synthetic_views_share_the_object_and_patents_differ():
  row_a, files_a = synthetic.make_patent(0, 5, seed=0)
  row_b, files_b = synthetic.make_patent(1, 5, seed=0)
  parts_a = sample_object(5, np.random.default_rng([0, 0]))
  assert row_a['class'].startswith('D 6') and row_b['class'].startswith('D 6')
  # Locarno as IMPACT gives it (class_search[0]), the same article -> code map as the Red Book layout's
  assert ast.literal_eval(row_a['class_search']) == [LOCARNO[row_a['title'].lower()], row_a['class']]
  assert set(files_a.values()).isdisjoint(files_b.values())
  views = [parse_view(d) for d in ast.literal_eval(row_a['fig_desc'])]
  assert views[0] == 'perspective' and len(set(views)) == len(views) >= 3
  assert len(parts_a) >= 1


def test_ingestion_reports_exactly_the_planted_bad_rows(synthetic_data, tmp_path, capsys):
  csv_path, raw_dir, _ = synthetic_data
  raw_copy = tmp_path / 'raw'
  shutil.copytree(raw_dir, raw_copy)
  bad_csv = tmp_path / 'bad.csv'
  expected, n_rows = plant_bad_rows(csv_path, str(raw_copy), str(bad_csv))
  summary = ingest.ingest(str(bad_csv), str(raw_copy), str(tmp_path / 'out'), image_size=32, workers=2,
                          progress=False)
  ingest.print_summary(summary)
  with open(tmp_path / 'out' / REPORT_CSV, newline='') as f:
    report = list(csv.DictReader(f))
  got = {(int(r['row']), r['patent_id']): (r['action'], r['reason']) for r in report}
  assert set(got) == set(expected)
  for key, (action, reason) in expected.items():
    assert got[key][0] == action and got[key][1].startswith(reason), (key, got[key])
    assert all(r['source'] == str(bad_csv) for r in report)
  skipped = sum(1 for a, _ in expected.values() if a == 'skipped')
  assert summary['rows_skipped'] == skipped
  assert sum(summary['patents_ingested'].values()) == n_rows - skipped
  with open(tmp_path / 'out' / REPORT_JSON) as f:
    assert json.load(f)['rows_skipped'] == skipped
  printed = capsys.readouterr().out
  assert 'row 3 ' in printed and 'unknown class' in printed


def test_splits_are_disjoint_by_patent_and_class_table_counts_train(synthetic_data):
  _, _, data_dir = synthetic_data
  ids = {s: [r['patent_id'] for r in pipeline.eval_records(data_dir, s)] for s in SPLITS}
  assert all(len(v) == len(set(v)) for v in ids.values())
  assert not set(ids['train']) & set(ids['validation'])
  assert not set(ids['train']) & set(ids['test'])
  assert not set(ids['validation']) & set(ids['test'])
  assert sum(map(len, ids.values())) == 132
  train_labels = [r['label'] for r in pipeline.eval_records(data_dir, 'train')]
  np.testing.assert_array_equal(pipeline.class_table(data_dir)['train_counts'],
                                np.bincount(train_labels, minlength=33))


@pytest.mark.parametrize('beta', [0.0, 1.0, 1.2])
def test_class_aware_sampling_shares_follow_n_pow_one_minus_beta(beta):
  counts = np.array([4000, 900, 250, 60, 12])
  labels = np.repeat(np.arange(5), counts)
  cdf = pipeline.sampling_cdf(labels, 5, beta)
  n = 100_000
  draws = np.array([pipeline.draw_record(cdf, np.random.default_rng([11, k])) for k in range(n)])
  shares = np.bincount(labels[draws], minlength=5) / n
  expected = counts ** (1 - beta) / np.sum(counts ** (1 - beta))
  # each share is a binomial proportion: within 5 standard errors (false alarm < 1e-5 per class)
  bound = 5 * np.sqrt(expected * (1 - expected) / n)
  assert np.all(np.abs(shares - expected) <= bound), (shares, expected)


def _tokenizer(data_dir):
  return Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)


def _options(**kw):
  return pipeline.TrainOptions(**{'image_size': 32, 'global_batch': 8, 'seed': 1, **kw})


def _batches(data_dir, opts, n, state=None):
  it = iter(pipeline.train_dataset(data_dir, opts, _tokenizer(data_dir)))
  if state is not None:
    it.set_state(state)
  return [next(it) for _ in range(n)], it


def _same(a, b):
  return all(np.array_equal(a[k], b[k]) for k in a)


def test_iterator_state_restores_the_next_batches(synthetic_data):
  _, _, data_dir = synthetic_data
  opts = _options()
  first, it = _batches(data_dir, opts, 3)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  resumed, _ = _batches(data_dir, opts, 2, state=state)
  assert all(_same(a, b) for a, b in zip(expected, resumed))
  assert not _same(first[0], first[1])


def test_worker_processes_and_read_threads_give_the_same_batches(synthetic_data):
  _, _, data_dir = synthetic_data
  plain, _ = _batches(data_dir, _options(read_threads=1), 2)  # one example after the other, in order
  workers, _ = _batches(data_dir, _options(worker_count=2), 2)
  threads, _ = _batches(data_dir, _options(read_threads=8), 2)
  assert all(_same(a, b) for a, b in zip(plain, workers)) and all(_same(a, b) for a, b in zip(plain, threads))


def test_two_processes_read_disjoint_complementary_slices(synthetic_data):
  _, _, data_dir = synthetic_data
  whole, _ = _batches(data_dir, _options(), 2)
  p0, _ = _batches(data_dir, _options(process_index=0, process_count=2), 2)
  p1, _ = _batches(data_dir, _options(process_index=1, process_count=2), 2)
  for w, a, b in zip(whole, p0, p1):
    assert a['image'].shape[0] == b['image'].shape[0] == 4
    for k in w:
      np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), w[k])


def test_batch_fields_pairs_and_weights(synthetic_data):
  _, _, data_dir = synthetic_data
  batches, _ = _batches(data_dir, _options(pair_strategy='random', beta_loss=1.0), 4)
  table = pipeline.class_table(data_dir)
  f = np.array(table['train_counts']) / sum(table['train_counts'])
  shapes = pipeline.batch_shapes(8, 32, 32)  # what the AOT compile and the benchmarks build batches from
  for b in batches:
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {k: (s, np.dtype(d)) for k, (s, d) in shapes.items()}
    np.testing.assert_allclose(b['weight'], 1 / f[b['label']], rtol=1e-5)
    assert np.all(b['tokens'][:, 0] == 0) and np.all((b['tokens'] == 1).any(axis=1))


def test_trained_tokenizer_layout(synthetic_data):
  _, _, data_dir = synthetic_data
  tok = _tokenizer(data_dir)
  ids = tok(['a sketch of furnishings', 'word ' * 100])
  assert ids.shape == (2, 32) and ids.dtype == np.int32
  assert ids[0, 0] == 0 and ids[0, -1] == tok.eos_token_id == 1
  assert ids[1, -1] == 1 and (ids[1, 1:-1] != 1).all()  # truncated: EOS kept last


def test_drawings_ship_as_their_grey_pixels(synthetic_data):
  """Without augmentation an example's drawings are the stored PNGs' pixels, area-resized to the model's size
  (PIL's BOX filter, the reference), uint8 with one channel: no normalisation on the host."""
  _, _, data_dir = synthetic_data
  opts = _options(augment=False, pair_strategy='random')
  transform = pipeline.TrainTransform(data_dir, opts, _tokenizer(data_dir))
  source = pipeline.open_split(data_dir, 'train')
  for k in range(6):
    example = transform(k)
    record = source[int(example['record'])]
    resized = [np.asarray(Image.open(io.BytesIO(png)).convert('L').resize((32, 32), Image.Resampling.BOX))
               for png in record['images']]
    for key, view in zip(('image', 'view'), example['view_ids']):
      assert example[key].dtype == np.uint8 and example[key].shape == (32, 32, 1)
      # one of the record's drawings of that view (a patent may hold two of one view)
      assert any(np.array_equal(example[key][..., 0], r) for r, v in zip(resized, record['views']) if v == view)
