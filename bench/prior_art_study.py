"""The prior-art benchmark (python -m designclip_jax.eval --task prior_art) on the synthetic Red Book set: the
pretrained start (bench/pretrained_start.py), plain fine-tuning and the paper's full method (bench/ablations.py's
'baseline' and 'full' settings of its finetune study: 100 steps x 48, learning rate 1e-4, from the pretrained
start), 5 seeds each at one code version, beside the examiner's baselines (Locarno subclass/class by date, BM25
over title and claim), which need no model.

A HARNESS CHECK, NOT EVIDENCE. The citations are drawn by the invented model of data/synthetic_collection.py (55%
of an examiner's citations an earlier design of the same article, 15% of the same class, ...), and the drawings
by the synthetic generator: these numbers check that the benchmark runs end to end and orders what it should
(a citation model built on articles rewards whatever finds the same article). Real numbers need real data.

    python bench/prior_art_study.py      # builds the Red Book set and the pretrained start on first use, then 10 runs
    python bench/prior_art_study.py --seeds 0 --steps 20 --out /tmp/pa_quick   # a quick look (not the study)
    python bench/prior_art_study.py --tabulate   # the table of the seeds finished so far (all settings done)
    git worktree add --detach ../pa_study HEAD && cd ../pa_study &&
      PYTHONPATH=$PWD python bench/prior_art_study.py   # one clean commit while others edit the shared tree

Finished runs are kept in runs.json and a rerun resumes; every run records its commit and the hash of the tracked
files' differences from it (the working tree is shared), and the table refuses runs of several code versions.
Writes docs/results/prior_art/: runs.json (every run: all metrics, by Locarno class, counts), table.json, table.md.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ablations  # noqa: E402
import pretrained_start  # noqa: E402

PATENTS, SEED, IMAGE_SIZE = 1500, 0, 128  # the size of the ablation studies' synthetic set
SETTINGS = {'baseline': 'plain fine-tuning (CLIP loss only)', 'full': "the paper's full method"}
METRICS = ('recall@10', 'recall@100', 'recall@1000', 'MAP', 'MRR', 'PRES@100', 'PRES@1000')
OUT = os.path.join(ablations.RESULTS, 'prior_art')


def ensure_redbook(progress: bool = True) -> str:
  """The synthetic Red Book set (weekly tars -> ingest --redbook with the IMPACT captions), built once in the cache."""
  import fcntl
  from designclip_jax.data import synthetic_redbook
  from designclip_jax.data.ingest import ingest_redbook, is_finished
  from designclip_jax.data.prepare import cache_root
  out = os.path.join(cache_root(), f'redbook-p{PATENTS}-s{SEED}-i{IMAGE_SIZE}')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not is_finished(out):
      raw = out + '.raw'
      tars = synthetic_redbook.generate(raw, PATENTS, SEED, progress=progress)
      ingest_redbook(tars, out, csv_pattern=os.path.join(raw, 'synthetic.csv'), image_size=IMAGE_SIZE, progress=progress)
      shutil.rmtree(raw, ignore_errors=True)
  return out


def code_state() -> dict:
  """The commit, and a hash of how the tracked files differ from it (others may be editing the same tree), of the
  checkout both bench/ and the imported designclip_jax come from: run from a worktree without PYTHONPATH, the venv's
  editable install imports another checkout's package, whose state the worktree's would misname."""
  import designclip_jax
  package_repo = os.path.dirname(os.path.dirname(os.path.abspath(designclip_jax.__file__)))
  if os.path.realpath(package_repo) != os.path.realpath(ablations.REPO):
    raise SystemExit(f'bench/ is {ablations.REPO} but designclip_jax is imported from {package_repo}: '
                     f'run with PYTHONPATH={ablations.REPO}')
  state = ablations.git_state(ablations.REPO)
  diff = subprocess.run(['git', '-C', ablations.REPO, 'diff', 'HEAD'], capture_output=True, check=False).stdout
  return {**state, 'diff_sha256': hashlib.sha256(diff).hexdigest() if state['dirty'] else None}


def version(run: dict) -> str:
  return ablations.code_version(run) + (f' (diff {run["diff_sha256"][:8]})' if run.get('diff_sha256') else '')


def score(model_dir: str, data_dir: str, normalization: str | None = None) -> dict:
  """The prior_art benchmark of one model on the set's test split (examiner citations), as the CLI computes it."""
  from designclip_jax.eval import prior_art_cli
  from designclip_jax.weights.loader import load_model
  clip, tokenizer, norm = load_model(model_dir)
  collection = prior_art_cli.load_collection(data_dir)
  embeddings = prior_art_cli.embed_collection(clip, tokenizer, data_dir, collection, batch_size=128,
                                              normalization=normalization or norm)
  return prior_art_cli.benchmark(collection, embeddings, citations='examiner', split='test')


def run_one(setting: str, seed: int, steps: int, batch: int, init: str, data_dir: str, workdir: str) -> dict:
  from designclip_jax.train.loop import train_and_evaluate
  config = ablations.make_config(setting, seed, steps, batch, 'finetune', init)
  config.data.dir = data_dir
  start = time.perf_counter()
  train_and_evaluate(config, workdir)
  result = score(workdir, data_dir)
  result['seconds'] = time.perf_counter() - start
  return result


def table(runs: dict) -> tuple[dict, str]:
  """(table.json's rows, table.md's table): model x method, mean ± sample std over seeds."""
  rows, lines = {}, ['| model | method | ' + ' | '.join(METRICS) + ' | runs |', '|---|---|' + '---|' * (len(METRICS) + 1)]
  methods = [m for m in runs['pretrained'][0]['methods'] if m not in ('locarno_by_date', 'bm25_title_claim')]
  for model in ('pretrained',) + tuple(SETTINGS):
    for method in methods:
      row = {k: ablations.mean_std([r['methods'][method][k] for r in runs.get(model, [])]) for k in METRICS}
      rows[f'{model}/{method}'] = row
      cells = ' | '.join(f'{m:.3f}' if n == 1 else f'{m:.3f} ± {s:.3f}' for m, s, n in row.values())
      lines.append(f'| {model} | {method} | {cells} | {row[METRICS[0]][2]} |')
  every = [r for model_runs in runs.values() for r in model_runs]
  for method in ('locarno_by_date', 'bm25_title_claim'):
    values = {json.dumps(r['methods'][method], sort_keys=True) for r in every}
    if len(values) != 1:
      raise SystemExit(f'{method} differs between runs: it needs no model and must not')
    row = {k: every[0]['methods'][method][k] for k in METRICS}
    rows[f'no model/{method}'] = row
    lines.append(f'| no model | {method} | ' + ' | '.join(f'{v:.3f}' for v in row.values()) + ' | – |')
  return rows, '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--batch', type=int, default=48)
  parser.add_argument('--out', default=OUT)
  parser.add_argument('--tabulate', action='store_true',
                      help='only tabulate the finished runs of --seeds (another process may still be running the rest)')
  args = parser.parse_args()
  from absl import flags, logging
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  import jax
  from designclip_jax.data.prepare import cache_root
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # a caller's cache (the test session's) stays its own
    jax.config.update('jax_compilation_cache_dir', os.path.join(cache_root(), 'xla-cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  code = code_state()  # before the set and the start are built: a mismatched checkout is refused at once
  os.makedirs(args.out, exist_ok=True)
  data_dir = ensure_redbook()
  info = pretrained_start.ensure()
  raw_path = os.path.join(args.out, 'runs.json')
  runs = {}
  if os.path.exists(raw_path):
    with open(raw_path) as f:
      runs = json.load(f)

  def record(model, seed, result):
    result.update(model=model, seed=seed, steps=args.steps, batch=args.batch, init_sha256=info['sha256'], **code)
    runs.setdefault(model, []).append(result)
    with open(raw_path + '.tmp', 'w') as f:
      json.dump(runs, f)
    os.replace(raw_path + '.tmp', raw_path)
    print(model, seed, {k: round(v['MAP'], 4) for k, v in result['methods'].items()}, flush=True)

  done = lambda model, seed: any(r['seed'] == seed and r['init_sha256'] == info['sha256'] and
                                 (model == 'pretrained' or (r['steps'], r['batch']) == (args.steps, args.batch))
                                 for r in runs.get(model, []))
  if args.tabulate:
    args.seeds = [s for s in args.seeds if all(done(setting, s) for setting in SETTINGS)]
  elif not done('pretrained', None):
    start = time.perf_counter()
    result = score(info['hf_dir'], data_dir, info['pixel_normalization'])
    result['seconds'] = time.perf_counter() - start
    record('pretrained', None, result)
  scratch = tempfile.mkdtemp(prefix='prior-art-study-')
  try:
    for seed in args.seeds:
      for setting in SETTINGS:
        if not done(setting, seed) and not args.tabulate:
          record(setting, seed, run_one(setting, seed, args.steps, args.batch, info['hf_dir'], data_dir,
                                        os.path.join(scratch, f'{setting}-{seed}')))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  chosen = {model: [r for r in model_runs if r['init_sha256'] == info['sha256'] and
                    (model == 'pretrained' or (r['seed'] in args.seeds and (r['steps'], r['batch']) ==
                                               (args.steps, args.batch)))]
            for model, model_runs in runs.items()}
  versions = sorted({version(r) for model_runs in chosen.values() for r in model_runs})
  if len(versions) > 1:
    raise SystemExit(f'the runs are of several code versions ({versions}): rerun them from an empty --out')
  rows, md = table(chosen)
  first = chosen['pretrained'][0]
  counts, coverage = first['citations_counted'], first['coverage']
  header = (
      f'**A harness check on an invented citation model, not evidence.** The synthetic Red Book set ({PATENTS} '
      f'patents, seed {SEED}, ingested with --redbook; citations drawn by data/synthetic_collection.py); queries: the '
      f'test split\'s {coverage["queries"]} of {coverage["candidates"]} patents with a relevant design (examiner '
      f'citations: {counts["citations"]} distinct, {counts["kept"]} relevant, {counts["outside_collection"]} outside '
      f'the collection, {counts["in_family"]} in the family, {counts["after_cutoff"]} after the cut-off); galleries '
      f'of median {first["gallery_size_median"]:.0f} patents. Models: the pretrained start (sha256 '
      f'{info["sha256"][:12]}), {", ".join(f"{k}: {v}" for k, v in SETTINGS.items())}, fine-tuned {args.steps} steps '
      f'x {args.batch} at learning rate 1e-4 on the set\'s train split, seeds {args.seeds}; mean ± sample std over '
      f'seeds. Code: {versions[0]}. Command: python bench/prior_art_study.py')
  with open(os.path.join(args.out, 'table.md'), 'w') as f:
    f.write(f'{header}\n\n{md}\n')
  with open(os.path.join(args.out, 'table.json'), 'w') as f:
    json.dump({'harness_check_not_evidence': True, 'patents': PATENTS, 'seed': SEED, 'steps': args.steps,
               'batch': args.batch, 'seeds': args.seeds, 'init_sha256': info['sha256'], 'code': versions[0],
               'citations_counted': counts, 'coverage': coverage, 'rows': rows}, f, indent=1)
  print(header + '\n\n' + md)


if __name__ == '__main__':
  main()
