"""DeepPatent from its own files, end to end: a DeepPatent-layout tree (list files + PNG sheets) scored by
the eval CLI with a small random CLIP; scores equal DeepPatent's official evaluation (re-written in
tests.eval_helpers) on the saved embeddings; features from another tool matched by path; missing and
unreadable images stop the run or are counted; CLIP_benchmark's result layout."""

import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from designclip_jax.data import images as image_ops
from designclip_jax.eval import deeppatent, embed, metrics
from designclip_jax.eval.__main__ import main
from designclip_jax.weights.loader import load_model
from tests.eval_helpers import deeppatent_official, tiny_clip_dir

pytest.importorskip('sklearn.metrics')


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


def _official_on(saved):
  """DeepPatent's official numbers on an .npz's embeddings (cosines in float64, rounded to float32)."""
  q = saved['query'] / np.linalg.norm(saved['query'], axis=1, keepdims=True)
  g = saved['gallery'] / np.linalg.norm(saved['gallery'], axis=1, keepdims=True)
  scores = (q.astype(np.float64) @ g.astype(np.float64).T).astype(np.float32)
  return deeppatent_official(scores, saved['query_labels'], saved['gallery_labels'], metrics.RANKS)


def _assert_official(got, saved):
  ref, per_query_ap = _official_on(saved)
  assert got['mAP'] == pytest.approx(ref['mAP'], abs=1e-6)
  for k in metrics.RANKS:  # the official code leaves out k >= the DB size
    assert got[f'rank@{k}'] == (pytest.approx(ref[f'rank@{k}']) if f'rank@{k}' in ref else None), k
  assert [np.nan if ap is None else ap for ap in got['per_query_ap']] == pytest.approx(list(per_query_ap), abs=1e-6,
                                                                                        nan_ok=True)
  assert got['query_paths'] == saved['query_paths'].tolist()


def test_deeppatent_tree_scores_like_the_official_code_on_saved_embeddings(deeppatent_tree, tiny_checkpoint, tmp_path):
  out, npz = tmp_path / 'dp.json', tmp_path / 'dp.npz'
  embed._TOWERS.clear()
  main(['--checkpoint', tiny_checkpoint, '--deeppatent', str(deeppatent_tree), '--split', 'test',
        '--task', 'image_retrieval', '--save-embeddings', str(npz), '--output', str(out), '--batch-size', '16'])
  got = json.loads(out.read_text())
  assert got.pop('provenance')['config']['deeppatent'] == str(deeppatent_tree)
  saved = np.load(npz)
  # 10 queries and 33 DB images in batches of 16 (last ones padded): the image tower compiled once
  assert [(method, fn._cache_size()) for _, method, fn in embed._TOWERS] == [('encode_image', 1)]

  # the saved embeddings are the listed images, in list order, preprocessed like our drawings
  clip, _, normalization = load_model(tiny_checkpoint)
  for key, list_name in (('query', 'test_query_patent.txt'), ('gallery', 'test_db_patent.txt')):
    paths, labels = _list(deeppatent_tree / 'data' / list_name)
    np.testing.assert_array_equal(saved[f'{key}_labels'], labels)
    np.testing.assert_array_equal(saved[f'{key}_paths'], paths)
    sheets = [image_ops.fit(image_ops.preprocess_sheet(Image.open(deeppatent_tree / p), 32), 32) for p in paths]
    pixels = image_ops.normalize(np.stack(sheets), normalization)
    np.testing.assert_allclose(saved[key], np.asarray(clip.encode_image(pixels)), atol=2e-5)

  # the protocol: every query against the whole DB, relevant = same label, as the official code scores it
  _assert_official(got, saved)
  assert got['num_queries'] == 10 and got['skipped_missing'] == 0 and got['queries_without_relevant'] == 0
  assert {'precision_at_1', 'pml_map', 'map_at_r'} <= set(got)

  # the saved file rescored through --embeddings gives the same numbers
  main(['--embeddings', str(npz), '--task', 'image_retrieval', '--output', str(tmp_path / 're.json')])
  assert {**json.loads((tmp_path / 're.json').read_text()), 'provenance': None} == {**got, 'provenance': None}

  # features another tool wrote: one pool of every image, shuffled, some paths absolute, matched by path
  paths = saved['query_paths'].tolist() + saved['gallery_paths'].tolist()
  features = np.concatenate([saved['query'], saved['gallery']])
  order = np.random.default_rng(1).permutation(len(paths))
  pool = tmp_path / 'other_tool.npz'
  np.savez(pool, paths=[str(deeppatent_tree / paths[i]) if i % 2 else paths[i] for i in order],
           embeddings=features[order])
  main(['--embeddings', str(pool), '--deeppatent', str(deeppatent_tree), '--output', str(tmp_path / 'pool.json')])
  assert {**json.loads((tmp_path / 'pool.json').read_text()), 'provenance': None} == {**got, 'provenance': None}

  # an image without features stops the run, or is left out and counted
  np.savez(pool, paths=[paths[i] for i in order[1:]], embeddings=features[order[1:]])
  with pytest.raises(SystemExit):
    main(['--embeddings', str(pool), '--deeppatent', str(deeppatent_tree)])
  main(['--embeddings', str(pool), '--deeppatent', str(deeppatent_tree), '--skip-missing', '--output',
        str(tmp_path / 'skip.json')])
  assert json.loads((tmp_path / 'skip.json').read_text())['skipped_missing'] == 1

  # CLIP_benchmark's layout, read the way `clip_benchmark build` reads it
  main(['--embeddings', str(npz), '--task', 'image_retrieval', '--format', 'clip_benchmark', '--output',
        str(tmp_path / 'cb')])
  (file,) = set(os.listdir(tmp_path / 'cb')) - {'provenance.json'}  # the records, and what made them
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
  db, db_labels = _list(root / 'data' / 'test_db_patent.txt')
  gone = [p for p, label in zip(db, db_labels) if label == '1']  # query 1 loses every relevant DB image
  for path in gone:
    os.remove(root / path)
  corrupt, bomb = [p for p, label in zip(db, db_labels) if label == '2'][:2]
  (root / corrupt).write_bytes(b'not a png')
  from PIL import Image
  Image.new('1', (8000, 8000), 1).save(root / bomb)  # 64 megapixels in a few KB: past data.images.MAX_PIXELS
  argv = ['--checkpoint', tiny_checkpoint, '--deeppatent', str(root), '--task', 'image_retrieval', '--output',
          str(tmp_path / 'dp.json')]
  with pytest.raises(SystemExit) as e:
    main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert f'{len(gone) + 2} of the {len(db)} test DB images are missing, unreadable or past the pixel limit' in err
  assert gone[0] in err and corrupt in err and bomb in err and '--skip-missing' in err
  assert not (tmp_path / 'dp.json').exists()

  main(argv + ['--skip-missing', '--save-embeddings', str(tmp_path / 'dp.npz')])
  got = json.loads((tmp_path / 'dp.json').read_text())
  assert got['skipped_missing'] == len(gone) + 2
  assert 'skipped_missing' in capsys.readouterr().out
  # the query left without a relevant item counts as the official code counts it, and the JSON says so
  assert got['queries_without_relevant'] == 1 and got['num_queries'] == 10
  assert 'misses in rank@k' in got['queries_without_relevant_counted_as']
  assert got['per_query_ap'][0] is None
  _assert_official(got, np.load(tmp_path / 'dp.npz'))


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
  # a query whose patent has no DB image: the lists do not belong together (before any image is read)
  (bad / 'data' / 'test_query_patent.txt').write_text('a.png 1\nb.png 2\nd.png 001\n')
  with pytest.raises(SystemExit):
    main(['--checkpoint', tiny_checkpoint, '--deeppatent', str(bad)])
  err = capsys.readouterr().err
  assert '2 of the 3 queries in' in err and 'b.png (label 2), d.png (label 001)' in err
  assert 'do not belong together' in err


def test_features_with_two_embeddings_for_one_image_are_refused(deeppatent_tree):
  query, _ = _list(deeppatent_tree / 'data' / 'test_query_patent.txt')
  features = {'paths': np.array([query[0], str(deeppatent_tree / query[0])]), 'embeddings': np.eye(2)}
  with pytest.raises(ValueError, match='has two different embeddings in the embeddings file'):
    deeppatent.features_by_path(features, str(deeppatent_tree), 'test')
  with pytest.raises(ValueError, match='holds no image paths'):
    deeppatent.features_by_path({'query': np.eye(2)}, str(deeppatent_tree), 'test')


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
