"""Do the paper's mechanisms work? The same small model, step budget and initialisation per seed,
trained under each setting on the embedded synthetic set and evaluated on its held-out test split.

    python bench/ablations.py                 # full study: 3 seeds x 17 settings, 100 steps x 48 -> docs/results/ (~1 h)
    python bench/ablations.py --quick         # smoke test: 1 seed, 3 settings, 20 steps (not evidence)
    python bench/ablations.py --settings baseline full --seeds 0 1 2 --steps 200

Every run records the commit it ran at (and whether tracked files differed from it). A study of runs at more
than one code version is refused, naming the runs not at the current one: rerun them (--rerun-stale) or
tabulate anyway, each row labelled with its commits (--allow-mixed-commits).

Settings (λ = (CACLS, CACL, MVCL); β_s sampling, β_l loss weights):
  baseline        plain InfoNCE only: λ=(0,1,0), β_s=β_l=0
  sampling        + class-aware sampling:     λ=(0,1,0), β_s=1.2
  weights         + class-aware loss weights: λ=(0,1,0), β_l=1.2
  sampling+weights both, β=1.2
  full            the paper: λ=(1,0.1,0.2), β_s=β_l=1.2, attention fusion head
  beta=B          full method with β_s=β_l=B, B in {0, 0.5, 1.0, 1.5, 2.0}
  no_mvcl / no_cacls / linear_head   full without L_MVCL / without L_CACLS / with the linear head
  lambda2=x / lambda3=x              full with λ2 in {0.05, 0.2} / λ3 in {0.1, 0.4}
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

METRICS = ('top1', 'balanced_acc', 'head_acc', 'medium_acc', 'tail_acc', 'mAP', 'rank@1', 't2i_R@5', 'i2t_R@5',
           'probe_acc')
FULL = {'loss.lambdas': (1.0, 0.1, 0.2), 'loss.beta_sample': 1.2, 'loss.beta_loss': 1.2}
CACL_ONLY = {'loss.lambdas': (0.0, 1.0, 0.0), 'loss.beta_sample': 0.0, 'loss.beta_loss': 0.0}
SETTINGS = {
    'baseline': CACL_ONLY,
    'sampling': {**CACL_ONLY, 'loss.beta_sample': 1.2},
    'weights': {**CACL_ONLY, 'loss.beta_loss': 1.2},
    'sampling+weights': {**CACL_ONLY, 'loss.beta_sample': 1.2, 'loss.beta_loss': 1.2},
    'full': FULL,
    **{f'beta={b}': {**FULL, 'loss.beta_sample': b, 'loss.beta_loss': b} for b in (0.0, 0.5, 1.0, 1.5, 2.0)},
    'no_mvcl': {**FULL, 'loss.lambdas': (1.0, 0.1, 0.0)},
    'no_cacls': {**FULL, 'loss.lambdas': (0.0, 0.1, 0.2)},
    'linear_head': {**FULL, 'model.head': 'linear'},
    **{f'lambda2={x}': {**FULL, 'loss.lambdas': (1.0, x, 0.2)} for x in (0.05, 0.2)},
    **{f'lambda3={x}': {**FULL, 'loss.lambdas': (1.0, 0.1, x)} for x in (0.1, 0.4)},
}
QUICK = ('baseline', 'full', 'no_mvcl')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_state(repo=REPO) -> dict:
  """The commit the code runs at, and whether tracked files differ from it (then the commit alone does not
  name the code)."""
  def git(*args):
    return subprocess.run(['git', '-C', repo, *args], capture_output=True, text=True, check=True).stdout.strip()
  try:
    return {'commit': git('rev-parse', 'HEAD'), 'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}
  except (OSError, subprocess.CalledProcessError):
    return {'commit': 'unknown', 'dirty': True}


def code_version(run: dict) -> str:
  """Short commit of a run (+dirty when its tree had uncommitted changes); 'unrecorded' for runs from before
  commits were recorded."""
  return (run['commit'][:7] if 'commit' in run else 'unrecorded') + ('+dirty' if run.get('dirty') else '')


def stale_runs(results: dict, current: str) -> list[str]:
  """'setting (seeds ...) @ version' for the runs not at version ``current``, if the runs are of several versions."""
  if len({code_version(r) for runs in results.values() for r in runs}) <= 1:
    return []
  stale = {}
  for setting, runs in results.items():
    for r in runs:
      if code_version(r) != current:
        stale.setdefault((setting, code_version(r)), []).append(str(r['seed']))
  return [f'{setting} (seeds {" ".join(seeds)}) @ {version}' for (setting, version), seeds in stale.items()]


def make_config(setting, seed, steps, batch):
  from designclip_jax.train.config import base_config
  c = base_config()
  c.model.preset = 'tiny'
  c.model.fusion_width = 128
  c.model.pixel_normalization = 'sketch'
  c.data.context_length = 48
  c.train.update(dict(steps=steps, global_batch=batch, learning_rate=1e-3, warmup_steps=max(1, steps // 10),
                      weight_decay=0.1, seed=seed, log_every=max(1, steps // 5), checkpoint_every=steps,
                      keep_checkpoints=1))
  c.eval.tasks = ()
  for path, value in SETTINGS[setting].items():
    group, key = path.split('.')
    c[group][key] = value
  return c


def run_one(setting, seed, steps, batch, workdir):
  from designclip_jax.data import pipeline
  from designclip_jax.eval import runner
  from designclip_jax.weights.loader import load_model
  from designclip_jax.train.loop import train_and_evaluate
  config = make_config(setting, seed, steps, batch)
  start = time.perf_counter()
  train_and_evaluate(config, workdir)
  clip, tokenizer, norm = load_model(workdir)
  from designclip_jax.data.prepare import ensure_dataset
  data_dir = ensure_dataset(config.data)
  scores = runner.evaluate(clip, tokenizer, data_dir, 'test', runner.TASKS, progress=False, keep_arrays=True,
                           pixel_normalization=norm)
  arrays = scores.pop('_arrays')
  scores.pop('_records')
  scores['seconds'] = time.perf_counter() - start
  scores['per_class_acc'] = [None if np.isnan(x) else float(x) for x in arrays['per_class_acc']]
  scores['train_counts'] = pipeline.class_table(data_dir)['train_counts']
  return scores


def summarise(results):
  """setting -> metric -> (mean, std over seeds, n), and 'code': the code versions its runs were measured at."""
  table = {}
  for setting, runs in results.items():
    table[setting] = {m: (float(np.mean([r[m] for r in runs])), float(np.std([r[m] for r in runs])), len(runs))
                      for m in METRICS + ('seconds',)}
    table[setting]['code'] = ' / '.join(sorted({code_version(r) for r in runs}))
  return table


def markdown(table):
  lines = ['| setting | ' + ' | '.join(METRICS) + ' | code |', '|---|' + '---|' * (len(METRICS) + 1)]
  for setting, row in table.items():
    cells = ' | '.join(f'{row[m][0]:.3f} ± {row[m][1]:.3f}' for m in METRICS)
    lines.append(f'| {setting} | {cells} | {row["code"]} |')
  return '\n'.join(lines)


def plots(results, table, out):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  written = []
  if 'baseline' in results and 'full' in results:
    counts = np.array(results['full'][0]['train_counts'], float)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ('baseline', 'full'):
      acc = np.array([[np.nan if x is None else x for x in r['per_class_acc']] for r in results[name]])
      mean = np.nanmean(acc, axis=0)
      ok = ~np.isnan(mean) & (counts > 0)
      ax.scatter(counts[ok], mean[ok], label=name, alpha=0.8)
    ax.set_xscale('log')
    ax.set_xlabel('training patents of the class (log)')
    ax.set_ylabel('zero-shot accuracy (mean over seeds)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'accuracy_by_class_frequency.png'), dpi=120)
    plt.close(fig)
    written.append('accuracy_by_class_frequency.png')
  betas = [(float(k.split('=')[1]), k) for k in table if k.startswith('beta=')]
  if 'full' in table:
    betas.append((1.2, 'full'))
  if len(betas) > 2:
    betas.sort()
    fig, ax = plt.subplots(figsize=(6, 4))
    for metric in ('top1', 'balanced_acc', 'tail_acc', 'mAP', 't2i_R@5'):
      mean = [table[k][metric][0] for _, k in betas]
      std = [table[k][metric][1] for _, k in betas]
      ax.errorbar([b for b, _ in betas], mean, yerr=std, label=metric, capsize=3, marker='o')
    ax.set_xlabel('β (sampling and loss)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'metric_vs_beta.png'), dpi=120)
    plt.close(fig)
    written.append('metric_vs_beta.png')
  if 'full' in table and 'no_mvcl' in table:
    fig, ax = plt.subplots(figsize=(4, 4))
    names = ['no_mvcl', 'full']
    ax.bar(names, [table[n]['mAP'][0] for n in names], yerr=[table[n]['mAP'][1] for n in names], capsize=4)
    ax.set_ylabel('image retrieval mAP')
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'map_with_without_mvcl.png'), dpi=120)
    plt.close(fig)
    written.append('map_with_without_mvcl.png')
  return written


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--batch', type=int, default=48)
  parser.add_argument('--out', default='docs/results')
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--rerun-stale', action='store_true', help='rerun finished runs made at another code version')
  parser.add_argument('--allow-mixed-commits', action='store_true',
                      help='tabulate runs of several code versions (each row says which)')
  args = parser.parse_args()
  if args.quick:
    args.settings, args.seeds, args.steps, args.out = list(QUICK), [0], 20, os.path.join(tempfile.gettempdir(),
                                                                                          'ablations_quick')
  from absl import flags, logging
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  os.makedirs(args.out, exist_ok=True)
  raw_path = os.path.join(args.out, 'ablations_runs.json')
  results = {}
  if os.path.exists(raw_path) and not args.quick:  # resume a study: finished runs are kept
    with open(raw_path) as f:
      results = json.load(f)
  code = git_state()
  current = code_version(code)
  if code['dirty']:
    print(f'warning: uncommitted changes to tracked files; new runs are labelled {current}, which no commit names')
  scratch = tempfile.mkdtemp(prefix='ablate-')
  try:
    for setting in args.settings:
      for seed in args.seeds:
        done = [r for r in results.get(setting, []) if r['seed'] == seed and r['steps'] == args.steps]
        if args.rerun_stale and done and code_version(done[0]) != current:
          results[setting].remove(done[0])
          done = []
        if done:
          continue
        print(f'== {setting} seed {seed}', flush=True)
        scores = run_one(setting, seed, args.steps, args.batch, os.path.join(scratch, f'{setting}-{seed}'))
        scores.update(seed=seed, steps=args.steps, **code)
        results.setdefault(setting, []).append(scores)
        print({m: round(scores[m], 4) for m in METRICS}, f"{scores['seconds']:.0f}s", flush=True)
        with open(raw_path, 'w') as f:
          json.dump(results, f)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  selected = {s: [r for r in results[s] if r['steps'] == args.steps] for s in args.settings if s in results}
  stale = stale_runs(selected, current)
  if stale and not args.allow_mixed_commits:
    raise SystemExit(f'the study mixes code versions; runs not at the current one ({current}): '
                     f'{", ".join(stale)}. Rerun them (--rerun-stale) or tabulate anyway, each row labelled with '
                     'its commits (--allow-mixed-commits).')
  table = summarise(selected)
  md = markdown(table)
  with open(os.path.join(args.out, 'ablations.md'), 'w') as f:
    mixed = ' Runs of several code versions (tabulated with --allow-mixed-commits): compare rows of different code ' \
            'with care.' if stale else ''
    f.write(f'Test split of the synthetic set; {args.steps} steps x batch {args.batch}; mean ± std over seeds '
            f'{args.seeds}; code: the commit(s) each row was measured at.{mixed}\n\n{md}\n')
  with open(os.path.join(args.out, 'ablations.json'), 'w') as f:
    json.dump({'steps': args.steps, 'batch': args.batch, 'seeds': args.seeds, 'table': table}, f, indent=1)
  print(md)
  print('plots:', plots(selected, table, args.out))


if __name__ == '__main__':
  main()
