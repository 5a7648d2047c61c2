"""DeepPatent from its own files, end to end: a DeepPatent-layout tree (list files + PNG sheets) scored by
the eval CLI with a small random CLIP; scores equal scikit-learn's on the saved embeddings; missing and
unreadable images stop the run or are counted; CLIP_benchmark's result layout."""

import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from designclip_jax.data import images as image_ops
from designclip_jax.eval import deeppatent, embed
from designclip_jax.eval.__main__ import main
from designclip_jax.weights.loader import load_model
from tests.eval_helpers import tiny_clip_dir

sklearn_metrics = pytest.importorskip('sklearn.metrics')


def _sheet(rng, shape_kind):
  """A drawing sheet: a patent's shape (same kind on each of its sheets) drawn at a random place and size."""
  w, h = int(rng.integers(60, 120)), int(rng.integers(80, 160))
  image = Image.new('L', (w, h), 255)
  draw = ImageDraw.Draw(image)
  x0, y0 = int(rng.integers(2, w // 3)), int(rng.integers(2, h // 3))
  x1, y1 = int(rng.integers(2 * w // 3, w - 2)), int(rng.integers(2 * h // 3, h - 2))
  (draw.rectangle if shape_kind % 2 else draw.ellipse)([x0, y0, x1, y1], outline=0, width=2)
  for i in range(shape_kind % 4):  # cross-hatching that tells the patents apart
    draw.line([x0, y0 + (i + 1) * (y1 - y0) // 5, x1, y1 - (i + 1) * (y1 - y0) // 5], fill=0, width=2)
  return image


@pytest.fixture(scope='module')
def deeppatent_tree(tmp_path_factory):
  """ROOT/I<date>/<patent>-<date>/<patent>-<date>-D<sheet>.png; ROOT/data/test_{query,db}_patent.txt:
  10 patents (labels 1..10), sheet 1 a query, the others in the DB; 2 extra DB-only patents."""
  root = tmp_path_factory.mktemp('deeppatent')
  rng = np.random.default_rng(0)
  query, db = [], []
  for label in range(1, 13):
    patent = f'USD08{label:05d}-20181127'
    folder = root / 'I20181127' / patent
    folder.mkdir(parents=True)
    for sheet in range(1, 1 + int(rng.integers(2, 5))):
      rel = f'I20181127/{patent}/{patent}-D{sheet:05d}.png'
      _sheet(rng, label).save(root / rel)
      (query if sheet == 1 and label <= 10 else db).append(f'{rel} {label}')
  (root / 'data').mkdir()
  (root / 'data' / 'test_query_patent.txt').write_text('\n'.join(query) + '\n')
  (root / 'data' / 'test_db_patent.txt').write_text('\n'.join(db) + '\n')
  return root


@pytest.fixture(scope='module')
def tiny_checkpoint(synthetic_data, tmp_path_factory):
  return tiny_clip_dir(str(tmp_path_factory.mktemp('tiny') / 'clip'), synthetic_data[2])


def _list(path):
  rows = [line.split() for line in path.read_text().splitlines()]
  return [r[0] for r in rows], np.array([r[1] for r in rows])


def test_deeppatent_tree_scores_like_sklearn_on_saved_embeddings(deeppatent_tree, tiny_checkpoint, tmp_path):
  out, npz = tmp_path / 'dp.json', tmp_path / 'dp.npz'
  embed._TOWERS.clear()
  main(['--checkpoint', tiny_checkpoint, '--deeppatent', str(deeppatent_tree), '--split', 'test',
        '--task', 'image_retrieval', '--save-embeddings', str(npz), '--output', str(out), '--batch-size', '16'])
  got = json.loads(out.read_text())
  saved = np.load(npz)
  # 10 queries and 33 DB images in batches of 16 (last ones padded): the image tower compiled once
  assert [(method, fn._cache_size()) for _, method, fn in embed._TOWERS] == [('encode_image', 1)]

  # the saved embeddings are the listed images, in list order, preprocessed like our drawings
  clip, _, normalization = load_model(tiny_checkpoint)
  for key, list_name in (('query', 'test_query_patent.txt'), ('gallery', 'test_db_patent.txt')):
    paths, labels = _list(deeppatent_tree / 'data' / list_name)
    np.testing.assert_array_equal(saved[f'{key}_labels'], labels)
    pixels = np.stack([image_ops.to_model_input(image_ops.preprocess_sheet(Image.open(deeppatent_tree / p), 32), 32,
                                                normalization) for p in paths])
    np.testing.assert_allclose(saved[key], np.asarray(clip.encode_image(pixels)), atol=2e-5)

  # the protocol: every query against the whole DB, relevant = same label; sklearn AP, Rank@k
  q = saved['query'] / np.linalg.norm(saved['query'], axis=1, keepdims=True)
  g = saved['gallery'] / np.linalg.norm(saved['gallery'], axis=1, keepdims=True)
  sims = q.astype(np.float64) @ g.astype(np.float64).T
  relevant = saved['query_labels'][:, None] == saved['gallery_labels'][None, :]
  assert got['mAP'] == pytest.approx(np.mean([sklearn_metrics.average_precision_score(r, s)
                                              for r, s in zip(relevant, sims)]), abs=1e-6)
  first_relevant = np.array([1 + (s[~r] >= s[r].max()).sum() for r, s in zip(relevant, sims)])
  for k in (1, 5, 10):
    assert got[f'rank@{k}'] == pytest.approx(np.mean(first_relevant <= k))
  assert got['num_queries'] == 10 and got['skipped_missing'] == 0
  assert {'precision_at_1', 'pml_map', 'map_at_r'} <= set(got)

  # the saved file rescored through --embeddings gives the same numbers
  main(['--embeddings', str(npz), '--task', 'image_retrieval', '--output', str(tmp_path / 're.json')])
  assert json.loads((tmp_path / 're.json').read_text()) == pytest.approx(got)

  # CLIP_benchmark's layout, read the way `clip_benchmark build` reads it
  main(['--embeddings', str(npz), '--task', 'image_retrieval', '--format', 'clip_benchmark', '--output',
        str(tmp_path / 'cb')])
  (file,) = os.listdir(tmp_path / 'cb')
  record = json.loads((tmp_path / 'cb' / file).read_text())
  assert set(record) == {'dataset', 'model', 'pretrained', 'task', 'metrics', 'language'}
  assert record['task'] == 'image_retrieval' and record['language'] == 'en'
  assert record['metrics']['mAP'] == pytest.approx(got['mAP'])
  assert all(isinstance(v, (int, float)) for v in record['metrics'].values())
  row = {**record['metrics'], **record}
  del row['metrics']
  # an embeddings file names both model and pretrained; the file name is CLIP_benchmark's default pattern
  assert row['model'] == row['pretrained'] == os.path.basename(npz)
  assert file == f"{row['dataset']}_{row['pretrained']}_{row['model']}_en_{row['task']}.json"


def test_missing_and_unreadable_images_stop_or_are_counted(deeppatent_tree, tiny_checkpoint, tmp_path, capsys):
  root = tmp_path / 'copy'
  import shutil
  shutil.copytree(deeppatent_tree, root)
  db, _ = _list(root / 'data' / 'test_db_patent.txt')
  os.remove(root / db[3])
  (root / db[5]).write_bytes(b'not a png')
  argv = ['--checkpoint', tiny_checkpoint, '--deeppatent', str(root), '--task', 'image_retrieval', '--output',
          str(tmp_path / 'dp.json')]
  with pytest.raises(SystemExit) as e:
    main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert f'2 of the {len(db)} test DB images are missing or unreadable' in err
  assert db[3] in err and db[5] in err and '--skip-missing' in err
  assert not (tmp_path / 'dp.json').exists()

  main(argv + ['--skip-missing'])
  got = json.loads((tmp_path / 'dp.json').read_text())
  assert got['skipped_missing'] == 2
  assert 'skipped_missing' in capsys.readouterr().out


def test_deeppatent_usage_errors(deeppatent_tree, tiny_checkpoint, tmp_path, capsys):
  cases = [
      (['--deeppatent', str(tmp_path)], 'test_query_patent.txt and test_db_patent.txt not found'),
      (['--deeppatent', str(deeppatent_tree), '--split', 'train'], "split must be one of ('test', 'val')"),
      (['--deeppatent', str(deeppatent_tree), '--task', 'zero_shot'], 'scores image_retrieval only'),
      (['--deeppatent', str(deeppatent_tree), '--plots'], '--plots and --per-class apply to --data'),
  ]
  for extra, message in cases:
    with pytest.raises(SystemExit) as e:
      main(['--checkpoint', tiny_checkpoint] + extra)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
  bad = tmp_path / 'bad'
  (bad / 'data').mkdir(parents=True)
  (bad / 'data' / 'test_query_patent.txt').write_text('a.png 1\nb.png\n')
  (bad / 'data' / 'test_db_patent.txt').write_text('c.png 1\n')
  with pytest.raises(SystemExit):
    main(['--checkpoint', tiny_checkpoint, '--deeppatent', str(bad)])
  assert 'test_query_patent.txt:2: expected "<relative/path.png> <label>"' in capsys.readouterr().err


def test_each_process_opens_only_its_share_and_all_agree(tmp_path, monkeypatch):
  """Two processes, simulated: each opens every other path, and the gathered answer (which the real
  process_allgather returns on every process) marks the broken files of both shares."""
  paths = [str(tmp_path / f'{i}.png') for i in range(7)]
  broken = {paths[1], paths[4]}  # one in each process's share
  opened, shares = [], {}
  monkeypatch.setattr(deeppatent, '_readable', lambda p: opened.append(p) or p not in broken)
  monkeypatch.setattr(deeppatent.jax, 'process_count', lambda: 2)
  monkeypatch.setattr(deeppatent.multihost_utils, 'process_allgather',
                      lambda x: (shares.__setitem__(index, x), np.stack([shares.get(i, 0 * x) for i in range(2)]))[1])
  for index in (1, 0):  # process 1's share is known when process 0 gathers
    monkeypatch.setattr(deeppatent.jax, 'process_index', lambda: index)
    opened.clear()
    ok = deeppatent._readable_everywhere(paths)
    assert opened == paths[index::2]
  assert ok.tolist() == [p not in broken for p in paths]
