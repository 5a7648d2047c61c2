"""The eval CLI: JSON equals the metric functions; embeddings and checkpoint inputs agree; clear errors."""

import json
import os
import re

import numpy as np
import pytest

from designclip_jax import save_pretrained
from designclip_jax.data import pipeline
from designclip_jax.eval import metrics, runner
from designclip_jax.eval.__main__ import main
from designclip_jax.weights.loader import load_model
from designclip_jax.train import loop
from tests.train_helpers import micro_config


def _cli(argv):
  main(argv)


def test_embeddings_input_json_equals_the_functions(tmp_path):
  rng = np.random.default_rng(0)
  q, g = rng.normal(size=(30, 8)), rng.normal(size=(120, 8))
  ql = np.array([f'P{i % 20}' for i in range(30)])
  gl = np.array([f'P{i % 25}' for i in range(120)])
  img, txt = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
  cls, labels = rng.normal(size=(5, 8)), rng.integers(0, 5, 40)
  path = tmp_path / 'emb.npz'
  np.savez(path, query=q, query_labels=ql, gallery=g, gallery_labels=gl, image=img, text=txt,
           class_embeddings=cls, labels=labels, class_counts=np.array([50, 20, 9, 4, 1]))
  _cli(['--embeddings', str(path), '--task', 'all', '--output', str(tmp_path / 'out.json')])
  got = json.loads((tmp_path / 'out.json').read_text())
  expected = metrics.image_retrieval(q, ql, g, gl)
  per_query_ap = expected.pop('per_query_ap')
  expected.update(metrics.multimodal_retrieval(img, txt))
  zs = metrics.zero_shot(img, labels, cls, [50, 20, 9, 4, 1])
  zs.pop('per_class_acc'), zs.pop('per_class_n')
  expected.update(zs)
  assert set(expected) <= set(got)
  for k, v in expected.items():
    assert got[k] == pytest.approx(v), k
  assert got['queries_without_relevant'] == 0 and got['num_queries'] == 30
  assert got['per_query_ap'] == pytest.approx(per_query_ap.tolist())  # each query's AP, in query order


def test_class_level_retrieval_with_labels_of_many_items(tmp_path, capsys):
  """A label with more gallery items than a chunk (8,192) crashed `eval --embeddings`; a query set that is
  the gallery is scored leave-one-out on request and refused without it."""
  rng = np.random.default_rng(3)
  centers = rng.normal(size=(3, 8))
  gl = np.r_[np.zeros(9000, int), rng.integers(1, 3, 1000)]
  g = centers[gl] + rng.normal(scale=2.0, size=(10000, 8))
  ql = rng.integers(0, 3, 20)
  q = centers[ql] + rng.normal(scale=2.0, size=(20, 8))
  classes = tmp_path / 'classes.npz'
  np.savez(classes, query=q, query_labels=ql, gallery=g, gallery_labels=gl)
  _cli(['--embeddings', str(classes), '--task', 'image_retrieval', '--output', str(tmp_path / 'classes.json')])
  got = json.loads((tmp_path / 'classes.json').read_text())
  expected = metrics.image_retrieval(q, ql, g, gl)
  assert got['per_query_ap'] == pytest.approx(expected.pop('per_query_ap').tolist())
  for k, v in expected.items():
    assert got[k] == pytest.approx(v), k

  x, labels = g[8500:], gl[8500:]  # 1,500 rows, the gallery only: every row a query
  np.savez(classes, gallery=x, gallery_labels=labels)
  _cli(['--embeddings', str(classes), '--task', 'image_retrieval', '--leave-one-out', '--output',
        str(tmp_path / 'loo.json')])
  got = json.loads((tmp_path / 'loo.json').read_text())
  expected = metrics.image_retrieval(x, labels, x, labels, leave_one_out=True)
  assert got['per_query_ap'] == pytest.approx(expected.pop('per_query_ap').tolist())
  for k, v in expected.items():
    assert got[k] == pytest.approx(v), k
  assert got['num_queries'] == 1500

  queries = rng.choice(1500, 200, replace=False)
  np.savez(classes, query=x[queries], query_labels=labels[queries], gallery=x, gallery_labels=labels)
  err = _exit_message(['--embeddings', str(classes), '--task', 'image_retrieval'], capsys)
  assert 'all 200 queries are gallery rows too' in err and '--leave-one-out' in err


def test_labels_of_two_types_are_refused(tmp_path, capsys):
  """'001' in one file and 1 in the other used to leave the query silently unmatched."""
  rng = np.random.default_rng(4)
  path = tmp_path / 'mixed.npz'
  np.savez(path, query=rng.normal(size=(3, 8)), query_labels=np.array(['001', '002', '003']),
           gallery=rng.normal(size=(9, 8)), gallery_labels=np.arange(9) % 3 + 1)
  err = _exit_message(['--embeddings', str(path), '--task', 'image_retrieval'], capsys)
  assert "query_labels are text (e.g. '001') but gallery_labels are numbers" in err
  err = _exit_message(['--embeddings', str(path), '--task', 'image_retrieval', '--leave-one-out',
                       '--deeppatent', str(tmp_path)], capsys)
  assert '--leave-one-out applies to image_retrieval from --embeddings' in err


def test_bad_embeddings_exit_with_a_clear_message(tmp_path, capsys):
  path = tmp_path / 'bad.npz'
  np.savez(path, query=np.ones((3, 4)), query_labels=np.arange(3), gallery=np.ones((5, 3)),
           gallery_labels=np.arange(5))
  with pytest.raises(SystemExit) as e:
    _cli(['--embeddings', str(path), '--task', 'image_retrieval'])
  assert e.value.code == 2
  assert 'gallery has dimension 3, expected 4' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    _cli(['--embeddings', str(path), '--task', 'multimodal_retrieval'])
  assert "lacks ['image', 'text']" in capsys.readouterr().err


def test_checkpoint_hf_export_and_embeddings_inputs_agree(synthetic_data, tmp_path, capsys):
  _, _, data_dir = synthetic_data
  config = micro_config(data_dir, steps=4)
  config.model.pixel_normalization = 'clip'  # what an HF directory implies
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  clip, tokenizer, norm = load_model(str(tmp_path / 'run'))
  save_pretrained(clip, str(tmp_path / 'hf'), tokenizer=tokenizer)

  out = tmp_path / 'cmp' / 'scores.json'
  _cli(['--compare', str(tmp_path / 'run'), str(tmp_path / 'hf'), '--data', data_dir, '--task', 'zero_shot',
        'image_retrieval', 'multimodal_retrieval', '--output', str(out), '--plots', '--per-class'])
  printed = capsys.readouterr().out
  assert 'mAP' in printed and re.search(r'^class\s+train\s+test', printed, re.M)
  assert re.search(r'^D\d+\s+\d+\s+\d+\s+\d\.\d{3}\s+\d\.\d{3}', printed, re.M)  # a class row, two models
  both = json.loads(out.read_text())
  assert both.pop('provenance')['data']['dir'] == data_dir
  assert set(both) == {'run', 'hf'}
  for k, v in both['run'].items():
    assert both['hf'][k] == pytest.approx(v, abs=1e-6), k
  assert (tmp_path / 'cmp' / 'long_tail.png').stat().st_size > 1000
  assert (tmp_path / 'cmp' / 'retrieval_run.png').stat().st_size > 1000

  records = list(pipeline.eval_records(data_dir, 'test'))
  qrefs, qids, grefs, gids = runner.retrieval_split(runner.split_records(data_dir, 'test'))
  query = [records[i]['images'][s] for i, s in qrefs]  # plain lists of PNG bytes, not the split reader
  gallery = [records[i]['images'][s] for i, s in grefs]
  from designclip_jax.eval.embed import embed_images, embed_texts
  covers = embed_images(clip, [r['images'][0] for r in records], progress=False, normalization=norm)
  texts = embed_texts(clip, tokenizer, [r['caption'] for r in records], progress=False)
  classes = runner.class_prompt_embeddings(clip, tokenizer, pipeline.class_table(data_dir)['names'],
                                           (runner.DEFAULT_TEMPLATE,))
  npz = tmp_path / 'emb.npz'
  np.savez(npz, query=embed_images(clip, query, progress=False, normalization=norm), query_labels=qids,
           gallery=embed_images(clip, gallery, progress=False, normalization=norm), gallery_labels=gids,
           image=covers, text=texts, class_embeddings=classes, labels=np.array([r['label'] for r in records]),
           class_counts=np.array(pipeline.class_table(data_dir)['train_counts']))
  _cli(['--embeddings', str(npz), '--output', str(tmp_path / 'emb.json')])
  from_embeddings = json.loads((tmp_path / 'emb.json').read_text())
  from_embeddings.pop('provenance')
  for k, v in from_embeddings.items():
    assert both['run'][k] == pytest.approx(v, abs=1e-6), k


def _exit_message(argv, capsys) -> str:
  """Run the CLI as a user would; it must stop with status 2 and a one-line message (no traceback)."""
  with pytest.raises(SystemExit) as e:
    _cli(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err
  return err


def test_missing_data_and_checkpoint_errors(tmp_path, capsys):
  err = _exit_message(['--checkpoint', str(tmp_path), '--data', str(tmp_path)], capsys)
  assert 'no ingested data set' in err and 'python -m designclip_jax.data.ingest' in err
  os.makedirs(tmp_path / 'designclip_patents' / '1.0.0')
  err = _exit_message(['--checkpoint', str(tmp_path / 'nothing'), '--data', str(tmp_path)], capsys)
  assert 'not a complete ingested data set' in err and 'classes.json' in err and 'data.ingest' in err
  (tmp_path / 'classes.json').write_text('{}')
  err = _exit_message(['--checkpoint', str(tmp_path / 'nothing'), '--data', str(tmp_path)], capsys)
  assert 'neither a training workdir' in err


def test_non_finite_embeddings_never_score(tmp_path, capsys):
  """A diverged model's NaN/Inf rows used to give mAP NaN and rank@1 1.0 (and a JSON with bare NaN)."""
  rng = np.random.default_rng(0)
  g = rng.normal(size=(120, 8))
  g[[4, 9, 30]] = np.nan
  path = tmp_path / 'diverged.npz'
  np.savez(path, query=rng.normal(size=(30, 8)), query_labels=np.arange(30) % 20, gallery=g,
           gallery_labels=np.arange(120) % 25)
  err = _exit_message(['--embeddings', str(path), '--task', 'image_retrieval', '--output',
                       str(tmp_path / 'out.json')], capsys)
  assert 'gallery has 3 of 120 rows with NaN or Inf (first rows: [4, 9, 30])' in err
  assert not (tmp_path / 'out.json').exists()


def test_a_file_that_is_not_an_npz_says_so(tmp_path, capsys):
  text = tmp_path / 'emb.npz'
  text.write_text('query,gallery\n1,2\n')
  npy = tmp_path / 'emb.npy'
  np.save(npy, np.ones((3, 4)))
  for path in (text, npy):
    err = _exit_message(['--embeddings', str(path), '--task', 'image_retrieval'], capsys)
    assert f"{str(path)!r} is not an .npz file" in err


def test_undefined_metrics_are_null_never_nan_in_json(tmp_path):
  rng = np.random.default_rng(1)
  cls = rng.normal(size=(6, 8))
  labels = np.array([0, 1, 2, 3] * 10)  # classes 4 and 5 (the tail by these counts) have no test item
  path = tmp_path / 'zs.npz'
  np.savez(path, image=cls[labels] + rng.normal(size=(40, 8)), labels=labels, class_embeddings=cls,
           class_counts=np.array([60, 50, 40, 30, 2, 1]))
  _cli(['--embeddings', str(path), '--task', 'zero_shot', '--output', str(tmp_path / 'zs.json')])
  text = (tmp_path / 'zs.json').read_text()

  def refuse(constant):
    raise AssertionError(f'{constant} in JSON')
  got = json.loads(text, parse_constant=refuse)  # strict: NaN / Infinity are not JSON
  assert got['tail_acc'] is None and 0 <= got['top1'] <= 1


def test_pairs_score_a_fixed_seeded_subset(tmp_path):
  rng = np.random.default_rng(2)
  img = rng.normal(size=(40, 8))
  txt = img + rng.normal(scale=1.0, size=(40, 8))
  path = tmp_path / 'pairs.npz'
  np.savez(path, image=img, text=txt)
  outs = []
  for name, seed in (('a', 3), ('b', 3), ('c', 4)):
    _cli(['--embeddings', str(path), '--task', 'multimodal_retrieval', '--pairs', '10', '--pairs-seed', str(seed),
          '--output', str(tmp_path / f'{name}.json')])
    outs.append({k: v for k, v in json.loads((tmp_path / f'{name}.json').read_text()).items() if k != 'provenance'})
  assert outs[0] == outs[1] and outs[0]['pairs'] == 10 and outs[0]['pairs_seed'] == 3
  chosen = runner.pair_subset(40, 10, 3)
  assert len(set(chosen)) == 10 and not np.array_equal(chosen, runner.pair_subset(40, 10, 4))
  expected = metrics.multimodal_retrieval(img[chosen], txt[chosen])
  for k, v in expected.items():
    assert outs[0][k] == pytest.approx(v), k
  assert metrics.multimodal_retrieval(img, txt)['t2i_R@1'] != pytest.approx(outs[0]['t2i_R@1'])


@pytest.mark.slow  # 31 s: the OpenAI loaders are checked against OpenAI's clip in the default run (test_openai_format)
def test_openai_checkpoint_file_scores_like_a_workdir_started_from_it(synthetic_data, tmp_path):
  """An OpenAI-format ResNet file (tokenizer beside it) given to --checkpoint scores exactly as a training
  workdir initialised from it and not moved (learning rate 0): same weights, same text pooling rule."""
  torch = pytest.importorskip('torch')
  from designclip_jax.data.tokenizer import Tokenizer
  from tests.openai_reference import make_openai_clip, write_open_clip_config
  _, _, data_dir = synthetic_data
  tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)
  ref = make_openai_clip(vision_layers=(1, 1, 1, 1), vision_width=8, image_resolution=32, context_length=32,
                         vocab_size=tokenizer.vocab_size, transformer_layers=1)
  os.makedirs(tmp_path / 'openai')
  checkpoint = str(tmp_path / 'openai' / 'RN-tiny.pt')
  torch.save(ref.state_dict(), checkpoint)
  write_open_clip_config(tmp_path / 'openai', quick_gelu=True)  # a state dict does not name its activation
  tokenizer.save(str(tmp_path / 'openai'))
  config = micro_config(data_dir, steps=1, learning_rate=0.0)
  config.model.init = checkpoint
  config.model.pixel_normalization = 'clip'
  loop.train_and_evaluate(config, str(tmp_path / 'run'))

  out = tmp_path / 'scores.json'
  _cli(['--compare', str(tmp_path / 'run'), checkpoint, '--data', data_dir, '--task', 'zero_shot',
        'image_retrieval', 'multimodal_retrieval', '--output', str(out)])
  both = json.loads(out.read_text())
  both.pop('provenance')
  run, from_file = both.values()
  assert run.keys() == from_file.keys() and 'top1' in run and 'mAP' in run
  for k, v in run.items():
    assert from_file[k] == pytest.approx(v, abs=1e-6), k
