"""`python -m designclip_jax.eval --task prior_art` end to end on a synthetic Red Book set generated and ingested
here: the collection it reads against the generator's own model (dates, families), the citations it leaves out
against the generator's sources, a method's scores against the brute-force reference of test_prior_art, and a
checkpoint's saved embeddings rescoring to the same numbers."""

import json
import os
import shutil

import numpy as np
import pytest

from designclip_jax.data.ingest import ingest_redbook
from designclip_jax.data.synthetic_collection import EXAMINER, Collection
from designclip_jax.data import synthetic_redbook
from designclip_jax.eval import prior_art, prior_art_cli
from designclip_jax.eval.__main__ import main
from tests.test_prior_art import _reference, _reference_metrics

N, SEED, WEEKS = 48, 3, 4


@pytest.fixture(scope='module')
def redbook_data(tmp_path_factory):
  root = tmp_path_factory.mktemp('prior_art')
  tars = synthetic_redbook.generate(str(root / 'raw'), N, SEED, WEEKS, workers=1, progress=False)
  ingest_redbook(tars, str(root / 'data'), image_size=32, workers=1, tokenizer_vocab=300, context_length=32,
                 progress=False)
  return str(root / 'data')


def _fake_embeddings(collection, dim=8):
  """Deterministic drawing and caption vectors (what a model would give), in the saved layout."""
  rng = np.random.default_rng(0)
  per_patent = np.maximum(collection['num_views'] - 1, 1)
  return {'patent_ids': collection['ids'], 'view_embeddings': rng.normal(size=(per_patent.sum(), dim)),
          'view_offsets': np.concatenate([[0], np.cumsum(per_patent)]),
          'caption_embeddings': rng.normal(size=(len(per_patent), dim))}


def test_collection_and_left_out_citations_are_the_generators(redbook_data):
  collection = prior_art_cli.load_collection(redbook_data)
  c = Collection(N, SEED, WEEKS)
  k = np.array([int(pid[1:]) - 700000 for pid in collection['ids']])
  assert sorted(k.tolist()) == list(range(N))
  effective = prior_art.effective_filing_dates(collection['filing'], collection['priority'])
  assert (effective.astype(np.int64) + 719163 == c.effective[k]).all()  # days since 1970 -> proleptic ordinals
  same_family = collection['family'][:, None] == collection['family'][None, :]
  assert (same_family == (c.root[k][:, None] == c.root[k][None, :])).all()
  result = prior_art_cli.benchmark(collection, None, split='all')
  expected = dict.fromkeys(('citations', 'kept', 'outside_collection', 'in_family', 'after_cutoff'), 0)
  reason = {'outside': 'outside_collection', 'family': 'in_family', 'late': 'after_cutoff'}
  for j in range(N):
    for ref in c.patent(j).references:
      if ref.category == EXAMINER and not ref.text:  # literature is not a cited document
        expected['citations'] += 1
        expected[reason.get(ref.source, 'kept')] += 1
  assert result['citations_counted'] == expected
  assert expected['kept'] and expected['outside_collection'] and expected['after_cutoff']
  assert set(result['methods']) == {'locarno_by_date', 'bm25_title_claim'}
  described = result['methods_described']  # the JSON says what each way of scoring is, not only that there are ways
  assert all(f'``{name}``' in described for name in prior_art_cli.MODEL_METHODS + prior_art_cli.BASELINES)
  assert result['collection']['patents_without_claim_text_bm25_reads_title_only'] == 0  # ingest kept every claim
  assert all(text.split('. ', 1)[1].startswith('The ornamental design for') for text in collection['text'])


def test_cli_scores_saved_embeddings_as_the_brute_force_reference_does(redbook_data, tmp_path, capsys):
  collection = prior_art_cli.load_collection(redbook_data)
  embeddings = _fake_embeddings(collection)
  np.savez(tmp_path / 'e.npz', **embeddings)
  out = tmp_path / 'pa.json'
  main(['--embeddings', str(tmp_path / 'e.npz'), '--data', redbook_data, '--task', 'prior_art', '--split', 'all',
        '--citations', 'all', '--output', str(out)])
  got = json.loads(out.read_text())
  assert 'drawings_best_pair' in capsys.readouterr().out
  assert set(got['methods']) == set(prior_art_cli.MODEL_METHODS + prior_art_cli.BASELINES)
  # drawings_mean against the brute-force ranking of test_prior_art, from the vectors themselves
  views = embeddings['view_embeddings'] / np.linalg.norm(embeddings['view_embeddings'], axis=1, keepdims=True)
  mean = np.add.reduceat(views, embeddings['view_offsets'][:-1])
  mean /= np.linalg.norm(mean, axis=1, keepdims=True)
  effective = prior_art.effective_filing_dates(collection['filing'], collection['priority'])
  cited = [a + b for a, b in zip(collection['cited']['cited_by_examiner'], collection['cited']['cited_by_applicant'])]
  expected, counts = _reference(mean @ mean.T, collection['ids'], effective, collection['family'], cited,
                                np.ones(N, bool))
  assert got['citations_counted'] == counts and got['coverage']['queries'] == len(expected)
  per_query = [_reference_metrics(ranks) for _, ranks, _ in expected.values()]
  for key in prior_art.METRIC_KEYS:
    assert got['methods']['drawings_mean'][key] == pytest.approx(np.mean([m[key] for m in per_query]), abs=1e-6)
  by_class = got['methods']['drawings_mean']['by_class']
  assert sum(c['num_queries'] for c in by_class.values()) == len(expected)


def test_bad_input_is_one_line(redbook_data, tmp_path, capsys):
  def error(argv):
    with pytest.raises(SystemExit) as e:
      main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip()
  collection = prior_art_cli.load_collection(redbook_data)
  embeddings = _fake_embeddings(collection)
  embeddings['patent_ids'] = embeddings['patent_ids'][::-1]
  np.savez(tmp_path / 'other.npz', **embeddings)
  base = ['--data', redbook_data, '--task', 'prior_art']
  assert 'holds other patents than the data set' in error(['--embeddings', str(tmp_path / 'other.npz'), *base])
  assert 'runs alone' in error(['--embeddings', str(tmp_path / 'other.npz'), *base, 'zero_shot'])
  no_xml = tmp_path / 'no_xml'
  shutil.copytree(redbook_data, no_xml)
  os.remove(no_xml / 'patents.jsonl')
  assert 'needs the grant XML fields' in error(['--embeddings', str(tmp_path / 'other.npz'), '--data', str(no_xml),
                                                '--task', 'prior_art'])
  np.savez(tmp_path / 'e.npz', **_fake_embeddings(collection))
  assert "split 'nope' holds no patent" in error(['--embeddings', str(tmp_path / 'e.npz'), *base, '--split', 'nope'])


@pytest.mark.slow
def test_checkpoint_embeddings_saved_and_rescored_give_the_same_numbers(redbook_data, tmp_path):
  from designclip_jax.train import loop  # pylint: disable=import-outside-toplevel
  from tests.train_helpers import micro_config  # pylint: disable=import-outside-toplevel
  loop.train_and_evaluate(micro_config(redbook_data, steps=1, learning_rate=0.0), str(tmp_path / 'run'))
  main(['--checkpoint', str(tmp_path / 'run'), '--data', redbook_data, '--task', 'prior_art', '--split', 'all',
        '--save-embeddings', str(tmp_path / 'e.npz'), '--output', str(tmp_path / 'a.json')])
  main(['--embeddings', str(tmp_path / 'e.npz'), '--data', redbook_data, '--task', 'prior_art', '--split', 'all',
        '--output', str(tmp_path / 'b.json')])
  a, b = (json.loads((tmp_path / n).read_text()) for n in ('a.json', 'b.json'))
  assert a['methods'] == b['methods'] and a['coverage'] == b['coverage']
  with np.load(tmp_path / 'e.npz') as z:
    collection = prior_art_cli.load_collection(redbook_data)
    assert z['patent_ids'].tolist() == collection['ids'].tolist()
    assert z['filing_dates'].tolist() == np.datetime_as_string(collection['filing']).tolist()
    assert z['effective_dates'].tolist() == np.datetime_as_string(
        prior_art.effective_filing_dates(collection['filing'], collection['priority'])).tolist()
    assert len(z['view_embeddings']) == z['view_offsets'][-1] == np.maximum(collection['num_views'] - 1, 1).sum()
    np.testing.assert_allclose(np.linalg.norm(z['patent_embeddings'], axis=1), 1, rtol=1e-5)


def test_the_real_sample_goes_through_the_benchmark_to_a_refusal_that_says_why(tmp_path, capsys):
  """The 35 real grants (all of 2021) ingested with --redbook: none cites another, so --task prior_art refuses in
  one line, and the line counts every distinct citation as outside the collection (reference: the grants' own
  citation lists, which test_redbook checks against the raw XML)."""
  import glob  # pylint: disable=import-outside-toplevel
  from designclip_jax.data.redbook import parse_grant  # pylint: disable=import-outside-toplevel
  from tests.conftest import IMPACT_SAMPLE  # pylint: disable=import-outside-toplevel
  if not (IMPACT_SAMPLE / 'sample_data.csv').is_file():
    pytest.skip(f'real IMPACT sample not found at {IMPACT_SAMPLE}')
  ingest_redbook([str(IMPACT_SAMPLE)], str(tmp_path / 'data'), image_size=16, workers=1, progress=False)
  grants = []
  for path in sorted(glob.glob(str(IMPACT_SAMPLE / '*' / '*.XML'))):
    with open(path, 'rb') as f:
      grants.append(parse_grant(f.read()))
  collection = prior_art_cli.load_collection(str(tmp_path / 'data'))
  assert sorted(collection['ids'].tolist()) == sorted(g.patent_id for g in grants)
  np.savez(tmp_path / 'e.npz', **_fake_embeddings(collection))
  for citations, lists in (('examiner', lambda g: g.cited_by_examiner),
                           ('all', lambda g: g.cited_by_examiner + g.cited_by_applicant)):
    distinct = sum(len(set(lists(g))) for g in grants)
    with pytest.raises(SystemExit) as e:
      main(['--embeddings', str(tmp_path / 'e.npz'), '--data', str(tmp_path / 'data'), '--task', 'prior_art',
            '--split', 'all', '--citations', citations])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and err.endswith(
        f'no query ({distinct} distinct {citations} citations: {distinct} outside the collection, 0 in the family, '
        '0 after the cut-off)'), err
