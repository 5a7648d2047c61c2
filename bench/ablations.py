"""Do the paper's mechanisms work? The same small model, step budget and initialisation per seed, trained under
each setting on the embedded synthetic set and evaluated on its held-out test split. Two studies:

  scratch    the tiny towers from random initialisation, learning rate 1e-3
  finetune   the paper's setting: the towers start from a CLIP pretrained with the plain CLIP objective on a
             broader synthetic corpus (bench/pretrained_start.py, built on first use, ~15 min), loaded as an
             HF CLIP directory (--config.model.init); a small learning rate (1e-4), the same short schedule

    python bench/ablations.py --study finetune   # 14 settings x 5 seeds, 100 steps x 48 -> docs/results/finetune/
    python bench/ablations.py --study scratch    # the same grid from scratch -> docs/results/scratch/
    python bench/ablations.py --quick            # smoke test, from scratch: 1 seed, 3 settings, 20 steps (not evidence)
    python bench/ablations.py --study finetune --verify full 3   # rerun one recorded run; compare its numbers
    python bench/ablations.py --compare          # the two studies side by side -> docs/results/comparison.md

Runs go seed by seed (every setting at seed 0, then at seed 1, ...), so an interrupted study leaves whole seeds and
at most one partial one; finished runs are kept and the rerun resumes. From nothing: --out a new directory (and,
for the fine-tuning study, DESIGNCLIP_CACHE a new directory, so the corpus and the pretraining are redone too).
--verify reruns fine-tuning from the cached pretrained start: it checks fine-tuning, not pretraining. Exact
agreement needs the study's machine class and device count (the studies ran on one CPU device; forcing 8 host
devices splits the embedding and moves mAP by ~1e-6). Every run records the commit it ran at (and whether tracked files
differed from it). A study of runs at more than one code version is refused, naming the runs not at the current
one: rerun them (--rerun-stale) or tabulate anyway, each row labelled with its commits (--allow-mixed-commits).

Settings (λ = (CACLS, CACL, MVCL); β_s sampling, β_l loss weights; a class's total emphasis is n^(1-β_s-β_l)):
  baseline           plain InfoNCE only: λ=(0,1,0), β_s=β_l=0
  sampling           + class-aware sampling:     λ=(0,1,0), β_s=1.2
  weights            + class-aware loss weights: λ=(0,1,0), β_l=1.2
  sampling+weights   both, β=1.2
  full               the paper: λ=(1,0.1,0.2), β_s=β_l=1.2, attention fusion head
  beta=B             full method with β_s=β_l=B
  full_sampling_only / full_weights_only   full with β_s=1.2, β_l=0 / β_s=0, β_l=1.2 (emphasis n^-0.2, as beta=0.6)
  no_mvcl / no_cacls / linear_head         full without L_MVCL / without L_CACLS / with the linear head
  lambda2=x / lambda3=x                    full with λ2 in {0.05, 0.2} / λ3 in {0.1, 0.4}
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrained_start  # noqa: E402

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
    **{f'beta={b}': {**FULL, 'loss.beta_sample': b, 'loss.beta_loss': b} for b in (0.0, 0.5, 0.6, 1.0, 1.5, 2.0)},
    'full_sampling_only': {**FULL, 'loss.beta_loss': 0.0},
    'full_weights_only': {**FULL, 'loss.beta_sample': 0.0},
    'no_mvcl': {**FULL, 'loss.lambdas': (1.0, 0.1, 0.0)},
    'no_cacls': {**FULL, 'loss.lambdas': (0.0, 0.1, 0.2)},
    'linear_head': {**FULL, 'model.head': 'linear'},
    **{f'lambda2={x}': {**FULL, 'loss.lambdas': (1.0, x, 0.2)} for x in (0.05, 0.2)},
    **{f'lambda3={x}': {**FULL, 'loss.lambdas': (1.0, 0.1, x)} for x in (0.1, 0.4)},
}
# the grid both studies run (the λ, no_cacls and β=1.5 rows are in the first from-scratch study only)
GRID = ('baseline', 'sampling', 'weights', 'sampling+weights', 'full', 'beta=0.0', 'beta=0.5', 'beta=1.0', 'beta=2.0',
        'full_sampling_only', 'full_weights_only', 'beta=0.6', 'no_mvcl', 'linear_head')
STUDIES = {'scratch': {'learning_rate': 1e-3, 'warmup_steps': 10},
           'finetune': {'learning_rate': 1e-4, 'warmup_steps': 10}}
QUICK = ('baseline', 'full', 'no_mvcl')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'docs', 'results')
RUNS_FILE, TABLE_MD, TABLE_JSON = 'runs.json', 'table.md', 'table.json'


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


def make_config(setting, seed, steps, batch, study='scratch', init=''):
  from designclip_jax.train.config import base_config
  c = base_config()
  c.model.preset = 'tiny'  # ignored when init is set: the towers' shapes come from the checkpoint
  c.model.init = init
  c.model.fusion_width = 128
  c.model.pixel_normalization = 'sketch'
  c.data.context_length = 48
  c.train.update(dict(steps=steps, global_batch=batch, learning_rate=STUDIES[study]['learning_rate'],
                      warmup_steps=min(STUDIES[study]['warmup_steps'], max(1, steps // 10)), weight_decay=0.1,
                      seed=seed, log_every=max(1, steps // 5), checkpoint_every=steps, keep_checkpoints=1))
  c.eval.tasks = ()
  for path, value in SETTINGS[setting].items():
    group, key = path.split('.')
    c[group][key] = value
  return c


def run_one(setting, seed, steps, batch, workdir, study='scratch', init=''):
  from designclip_jax.data import pipeline
  from designclip_jax.data.prepare import ensure_dataset
  from designclip_jax.train.loop import train_and_evaluate
  from designclip_jax.weights.loader import load_model
  config = make_config(setting, seed, steps, batch, study, init)
  start = time.perf_counter()
  trained = train_and_evaluate(config, workdir)
  clip, tokenizer, norm = load_model(workdir)
  data_dir = ensure_dataset(config.data)
  scores = pretrained_start.test_scores(clip, tokenizer, data_dir, norm)
  scores['seconds'] = time.perf_counter() - start
  # the last logged training loss and temperature: continuous, so --verify sees drift that counts hide
  scores.update({f'final_{k}': float(trained[k]) for k in ('loss', 'temperature') if k in trained})
  scores['train_counts'] = pipeline.class_table(data_dir)['train_counts']
  return scores


def run_key(run: dict) -> tuple:
  """What must agree for a recorded run to stand for a requested one (the code version is checked apart)."""
  return (run['seed'], run['steps'], run.get('batch', 48), run.get('learning_rate', 1e-3), run.get('init_sha256'))


def mean_std(values) -> tuple[float, float, int]:
  """(mean, sample standard deviation, n) of the defined values (None = undefined, e.g. no tail class)."""
  values = [v for v in values if v is not None]
  if not values:
    return (float('nan'), float('nan'), 0)
  return (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values))


def summarise(results):
  """setting -> metric -> (mean, sample std over seeds, n), and 'code': the code versions its runs were measured
  at."""
  table = {}
  for setting, runs in results.items():
    table[setting] = {m: mean_std([r.get(m) for r in runs]) for m in METRICS + ('seconds',)}
    table[setting]['code'] = ' / '.join(sorted({code_version(r) for r in runs}))
  return table


def markdown(table):
  lines = ['| setting | ' + ' | '.join(METRICS) + ' | seeds | code |', '|---|' + '---|' * (len(METRICS) + 2)]
  for setting, row in table.items():
    cells = ' | '.join('–' if np.isnan(row[m][0]) else f'{row[m][0]:.3f} ± {row[m][1]:.3f}' for m in METRICS)
    lines.append(f'| {setting} | {cells} | {row[METRICS[0]][2]} | {row["code"]} |')
  return '\n'.join(lines)


def plots(results, table, out, reference=None):
  """Accuracy by class frequency (baseline vs full, and the pretrained start if given), metrics against β, and
  retrieval mAP with and without L_MVCL."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  written = []
  if 'baseline' in results and 'full' in results:
    counts = np.array(results['full'][0]['train_counts'], float)
    fig, ax = plt.subplots(figsize=(7, 4))
    series = [(name, [r['per_class_acc'] for r in results[name]]) for name in ('baseline', 'full')]
    if reference is not None:
      series.insert(0, ('pretrained (not fine-tuned)', [reference['per_class_acc']]))
    for name, per_class in series:
      acc = np.array([[np.nan if x is None else x for x in run] for run in per_class])
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


def _numbers(run: dict) -> dict:
  """Every number a run records that a rerun must reproduce (not its wall time, seed or settings)."""
  skip = {'seconds', 'seed', 'steps', 'batch', 'learning_rate', 'dirty', 'init_sha256'}  # settings, not results
  return {k: v for k, v in run.items() if k not in skip and (v is None or isinstance(v, (int, float)))}


def verify(out, setting, seed, tolerance) -> int:
  """Rerun one recorded run (its study, steps, batch and start as recorded) and compare every number it records
  -- each metric, the final training loss and temperature where recorded, per-class accuracy -- with the record;
  0 if all agree within ``tolerance``, 1 if not."""
  with open(os.path.join(out, RUNS_FILE)) as f:
    runs = json.load(f)
  found = [r for r in runs.get(setting, []) if r['seed'] == seed]
  if not found:
    raise SystemExit(f'{os.path.join(out, RUNS_FILE)} has no run of {setting!r} at seed {seed}')
  record = found[0]
  study = record.get('study', 'scratch')  # runs from before studies were named are from scratch
  if record.get('learning_rate', 1e-3) != STUDIES[study]['learning_rate']:
    raise SystemExit(f'the recorded run used learning rate {record["learning_rate"]}; study {study!r} now uses '
                     f'{STUDIES[study]["learning_rate"]}: it cannot be rerun as recorded')
  init = ''
  if record.get('init_sha256'):
    info = pretrained_start.ensure()
    if info['sha256'] != record['init_sha256']:
      raise SystemExit(f'the pretrained start built here ({info["sha256"][:12]}) is not the one the run started '
                       f'from ({record["init_sha256"][:12]}): fine-tuning cannot be rerun as recorded')
    init = info['hf_dir']
  print(f'rerunning {setting} seed {seed} ({study}, recorded at {code_version(record)}; code now '
        f'{code_version(git_state())})', flush=True)
  with tempfile.TemporaryDirectory(prefix='ablate-verify-') as scratch:
    again = run_one(setting, seed, record['steps'], record.get('batch', 48), os.path.join(scratch, 'run'), study,
                    init)
  recorded, rerun = _numbers(record), _numbers(again)
  worst, missing = 0.0, []
  print('| number | recorded | rerun | |diff| |\n|---|---|---|---|')
  for key, value in recorded.items():
    if key not in rerun:
      missing.append(key)
      continue
    if value is None or rerun[key] is None:
      diff = 0.0 if value is None and rerun[key] is None else float('inf')
    else:
      diff = abs(rerun[key] - value)
    worst = max(worst, diff)
    print(f'| {key} | {value} | {rerun[key]} | {diff:.2e} |')
  per_class = np.array([np.nan if x is None else x for x in again['per_class_acc']], float)
  recorded_class = np.array([np.nan if x is None else x for x in record['per_class_acc']], float)
  same_defined = np.array_equal(np.isnan(per_class), np.isnan(recorded_class))
  class_diff = float(np.nanmax(np.abs(per_class - recorded_class))) if same_defined else float('inf')
  worst = max(worst, class_diff)
  print(f'per-class accuracy: largest |diff| {class_diff:.2e} over {int(np.isfinite(recorded_class).sum())} classes')
  if missing:
    print(f'not rerun: {", ".join(missing)}')
  ok = worst <= tolerance and not missing
  print(f'reproduced: {len(recorded) + 1} recorded numbers, largest difference {worst:.3g}' if ok else
        f'NOT reproduced: largest difference {worst:.3g} > tolerance {tolerance}')
  return 0 if ok else 1


def compare(out_root, settings=GRID, metrics=('top1', 'balanced_acc', 'head_acc', 'tail_acc', 'mAP', 't2i_R@5')):
  """Markdown: each setting's metrics in both studies side by side, with the change against each study's
  baseline marked when it exceeds the seed spread (|Δ| > std(setting) + std(baseline))."""
  tables = {}
  for study in STUDIES:
    with open(os.path.join(out_root, study, TABLE_JSON)) as f:
      tables[study] = json.load(f)
  design = {study: (t.get('steps'), t.get('batch'), t.get('seeds')) for study, t in tables.items()}
  if len(set(map(str, design.values()))) > 1:
    raise SystemExit(f'the studies differ in (steps, batch, seeds): {design}; rerun one so they match')
  codes = {study: sorted({row['code'] for row in t['table'].values()}) for study, t in tables.items()}
  at = ', '.join(f'{study}: {" / ".join(c)}' for study, c in codes.items())
  lines = [f'Each study at code {at}; '
           f'{design["scratch"][0]} steps x batch {design["scratch"][1]}, seeds {design["scratch"][2]}. '
           '↑ / ↓: the change against the same study\'s baseline exceeds the seed spread (|Δ| > std + std of '
           'the baseline, sample std); ≈: within it.', '',
           '| setting | ' + ' | '.join(f'{m} scratch | {m} finetune' for m in metrics) + ' |',
           '|---|' + '---|' * (2 * len(metrics))]
  for setting in settings:
    cells = []
    for m in metrics:
      for study in STUDIES:
        row, base = tables[study]['table'].get(setting), tables[study]['table']['baseline']
        if row is None:
          cells.append('–')
          continue
        delta = row[m][0] - base[m][0]
        mark = '' if setting == 'baseline' else ('↑' if delta > 0 else '↓') if abs(delta) > row[m][1] + base[m][1] \
            else '≈'
        cells.append(f'{row[m][0]:.3f} ± {row[m][1]:.3f} {mark}'.rstrip())
    lines.append(f'| {setting} | ' + ' | '.join(cells) + ' |')
  if 'reference' in tables['finetune']:
    ref = tables['finetune']['reference']
    lines.append('| pretrained, not fine-tuned | ' + ' | '.join('– | –' if ref[m] is None else f'– | {ref[m]:.3f}'
                                                              for m in metrics) + ' |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--study', choices=list(STUDIES), default=None,
                      help='default: finetune (scratch with --quick)')
  parser.add_argument('--settings', nargs='+', default=list(GRID), choices=list(SETTINGS))
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2, 3, 4])
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--batch', type=int, default=48)
  parser.add_argument('--out', default=None,
                      help='the study\'s directory (default: docs/results/<study>); with --compare, the folder of both')
  parser.add_argument('--quick', action='store_true')
  parser.add_argument('--rerun-stale', action='store_true', help='rerun finished runs made at another code version')
  parser.add_argument('--allow-mixed-commits', action='store_true',
                      help='tabulate runs of several code versions (each row says which)')
  parser.add_argument('--verify', nargs=2, metavar=('SETTING', 'SEED'),
                      help='rerun one recorded run of the study and compare its numbers (exit 1 if they differ)')
  parser.add_argument('--tolerance', type=float, default=0.0, help='for --verify: largest accepted difference')
  parser.add_argument('--compare', action='store_true', help='write docs/results/comparison.md from both studies')
  args = parser.parse_args()
  from absl import flags, logging
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.WARNING)
  import jax
  from designclip_jax.data.prepare import cache_root
  # every seed of a setting compiles the same programs: XLA's persistent cache makes seeds 1.. cache hits
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # a caller's cache (the test session's) stays its own
    jax.config.update('jax_compilation_cache_dir', os.path.join(cache_root(), 'xla-cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  args.study = args.study or ('scratch' if args.quick else 'finetune')
  out = args.out or os.path.join(RESULTS, args.study)
  if args.compare:
    text = compare(args.out or RESULTS)
    with open(os.path.join(args.out or RESULTS, 'comparison.md'), 'w') as f:
      f.write(text + '\n')
    print(text)
    return
  if args.verify:
    raise SystemExit(verify(out, args.verify[0], int(args.verify[1]), args.tolerance))
  if args.quick:
    args.settings, args.seeds, args.steps = list(QUICK), [0], 20
    out = os.path.join(tempfile.gettempdir(), f'ablations_quick_{args.study}')
  os.makedirs(out, exist_ok=True)
  raw_path = os.path.join(out, RUNS_FILE)
  results = {}
  if os.path.exists(raw_path) and not args.quick:  # resume a study: finished runs are kept
    with open(raw_path) as f:
      results = json.load(f)
  code = git_state()
  current = code_version(code)
  if code['dirty']:
    print(f'warning: uncommitted changes to tracked files; new runs are labelled {current}, which no commit names')
  reference, init, init_sha, pretraining = None, '', None, None
  if args.study == 'finetune':
    info = pretrained_start.ensure()
    init, init_sha = info['hf_dir'], info['sha256']
    reference = {**info['scores_on_study_test_split'], 'sha256': init_sha}
    pretraining = {k: v for k, v in info.items() if k not in ('hf_dir', 'scores_on_study_test_split')}
    print(f'fine-tuning from {init} (sha256 {init_sha[:12]}; pretraining took {info["train_seconds"]:.0f} s)')
  want = dict(steps=args.steps, batch=args.batch, learning_rate=STUDIES[args.study]['learning_rate'],
              init_sha256=init_sha)
  scratch = tempfile.mkdtemp(prefix='ablate-')
  try:
    for seed in args.seeds:  # seed-major: an interrupted study leaves whole seeds
      for setting in args.settings:
        key = run_key({'seed': seed, **want})
        done = [r for r in results.get(setting, []) if run_key(r) == key]
        if args.rerun_stale and done and code_version(done[0]) != current:
          results[setting].remove(done[0])
          done = []
        if done:
          continue
        print(f'== {args.study}: {setting} seed {seed}', flush=True)
        scores = run_one(setting, seed, args.steps, args.batch, os.path.join(scratch, f'{setting}-{seed}'),
                         args.study, init)
        scores.update(seed=seed, study=args.study, **want, **code)
        results.setdefault(setting, []).append(scores)
        print({m: scores[m] if scores[m] is None else round(scores[m], 4) for m in METRICS},
              f"{scores['seconds']:.0f}s", flush=True)
        with open(raw_path + '.tmp', 'w') as f:
          json.dump(results, f)
        os.replace(raw_path + '.tmp', raw_path)  # a crash mid-write keeps the previous file
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  selected = {s: [r for r in results[s] if run_key(r)[1:] == run_key({'seed': 0, **want})[1:]
                  and r['seed'] in args.seeds] for s in args.settings if s in results}
  selected = {s: runs for s, runs in selected.items() if runs}
  stale = stale_runs(selected, current)
  if stale and not args.allow_mixed_commits:
    raise SystemExit(f'the study mixes code versions; runs not at the current one ({current}): '
                     f'{", ".join(stale)}. Rerun them (--rerun-stale) or tabulate anyway, each row labelled with '
                     'its commits (--allow-mixed-commits).')
  table = summarise(selected)
  md = markdown(table)
  lr = STUDIES[args.study]['learning_rate']
  start = (f'fine-tuned from the pretrained start (sha256 {init_sha[:12]}; bench/pretrained_start.py)'
           if init_sha else 'from random initialisation')
  mixed = ' Runs of several code versions (tabulated with --allow-mixed-commits): compare rows of different code ' \
          'with care.' if stale else ''
  header = (f'Study `{args.study}`: tiny towers {start}; {args.steps} steps x batch {args.batch}, learning rate {lr}; '
            f'test split of the synthetic set; mean ± std over seeds {args.seeds}; code: the commit(s) each row '
            f'was measured at.{mixed}')
  if reference is not None:
    ref = ' | '.join('–' if reference[m] is None else f'{reference[m]:.3f}' for m in METRICS)
    md += f'\n| pretrained, not fine-tuned | {ref} | – | – |'
  with open(os.path.join(out, TABLE_MD), 'w') as f:
    f.write(f'{header}\n\n{md}\n')
  with open(os.path.join(out, TABLE_JSON), 'w') as f:
    json.dump({'study': args.study, 'steps': args.steps, 'batch': args.batch, 'learning_rate': lr,
               'seeds': args.seeds, 'init_sha256': init_sha, 'pretraining': pretraining, 'table': table,
               **({'reference': {m: reference[m] for m in METRICS}} if reference else {})}, f, indent=1)
  print(md)
  print('plots:', plots(selected, table, out, reference))


if __name__ == '__main__':
  main()
