"""Benchmark CLIP models on design patents the way the field reports them.

    python -m designclip_jax.eval --checkpoint RUN_DIR_OR_HF_DIR --data DATA_DIR --task all
    python -m designclip_jax.eval --compare openai_clip/ runs/tiny/ --data DATA_DIR --output cmp.json
    python -m designclip_jax.eval --checkpoint C --deeppatent DEEPPATENT_ROOT --split test \\
        --task image_retrieval --save-embeddings dp_test.npz --output dp_test.json
    python -m designclip_jax.eval --embeddings emb.npz --task image_retrieval --output scores.json
    python -m designclip_jax.eval --embeddings feats.npz --deeppatent DEEPPATENT_ROOT --split test --output dp.json
    python -m designclip_jax.eval --embeddings classes.npz --task image_retrieval --leave-one-out
    python -m designclip_jax.eval --checkpoint C --data REDBOOK_DATA --task prior_art --output prior_art.json

A checkpoint is a training workdir (model.json + Orbax checkpoints; the newest step is used) or a
Hugging Face CLIP directory (config.json + model.safetensors + tokenizer files) or an OpenAI-format
checkpoint (OpenAI's RN50.pt / ViT-B-32.pt, open_clip's safetensors) with tokenizer files beside it.
Image retrieval reports DeepPatent's mAP and rank@k (its official code's definitions, ties broken by
gallery order) and pytorch-metric-learning's precision_at_1, pml_map and map_at_r (different definitions:
compare each only with numbers of its own name), and each query's AP (per_query_ap; null without a relevant
item; DeepPatent: query_paths names them). --embeddings with --deeppatent takes features another tool wrote,
matched to the list files by image path (keys query_paths + query, gallery_paths + gallery, or paths +
embeddings), labels from the lists. --leave-one-out: the query set is the gallery (an .npz with gallery and
gallery_labels only, or queries that are the gallery's first rows), each query's own row left out.
--task prior_art: examiners' citations as relevance judgments on a data set ingested with --redbook (eval/prior_art_cli.py
says how; --citations examiner|all, --split names the queries' split or all; --embeddings E.npz rescores what its
--save-embeddings wrote).
With DESIGNCLIP_DISTRIBUTED=1 every process of a multi-host job embeds a share; process 0 reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile

import numpy as np

from designclip_jax.eval import metrics, runner
from designclip_jax.paths import absolute

NPZ_KEYS = {
    'image_retrieval': ('query', 'query_labels', 'gallery', 'gallery_labels'),
    'multimodal_retrieval': ('image', 'text'),
    'zero_shot': ('image', 'labels', 'class_embeddings'),
}
# --format clip_benchmark: CLIP_benchmark's task names and metric names for ours (others keep their own).
CLIP_BENCHMARK_TASKS = {'zero_shot': 'zeroshot_classification', 'multimodal_retrieval': 'zeroshot_retrieval',
                        'linear_probe': 'linear_probe', 'image_retrieval': 'image_retrieval'}
CLIP_BENCHMARK_NAMES = {'top1': 'acc1', 'top5': 'acc5', 'balanced_acc': 'mean_per_class_recall',
                        'probe_acc': 'lp_acc1', 'probe_balanced_acc': 'lp_mean_per_class_recall',
                        **{f't2i_R@{k}': f'image_retrieval_recall@{k}' for k in (1, 5, 10)},
                        **{f'i2t_R@{k}': f'text_retrieval_recall@{k}' for k in (1, 5, 10)}}
TASK_KEYS = {'image_retrieval': ('num_queries', 'queries_without_relevant', 'skipped_missing'),
             'multimodal_retrieval': ('pairs', 'pairs_seed')}


class UsageError(Exception):
  pass


def _open_npz(path: str):
  if not os.path.isfile(path):
    raise UsageError(f'--embeddings {path!r} does not exist')
  if not zipfile.is_zipfile(path):
    raise UsageError(f'--embeddings {path!r} is not an .npz file (numpy.savez output; --save-embeddings '
                     'writes one)')
  return np.load(path, allow_pickle=False)


def _json_list(values) -> list:
  return [None if np.isnan(v) else float(v) for v in values]  # undefined values are JSON null, never NaN


def retrieval_scores(arrays, *, leave_one_out=False) -> dict:
  """image_retrieval on embeddings and labels (and, from DeepPatent, image paths and skipped_missing), with
  each query's AP in query order (None: no relevant item) and its image path where known."""
  query = arrays['query'] if 'query' in arrays else arrays['gallery']  # leave-one-out: the gallery is the queries
  query_labels = arrays['query_labels'] if 'query' in arrays else arrays['gallery_labels']
  scores = metrics.image_retrieval(query, query_labels, arrays['gallery'], arrays['gallery_labels'],
                                   leave_one_out=leave_one_out)
  scores['per_query_ap'] = _json_list(scores['per_query_ap'])
  if 'query_paths' in arrays:
    scores['query_paths'] = [str(p) for p in arrays['query_paths']]
  if 'skipped_missing' in arrays:
    scores['skipped_missing'] = int(arrays['skipped_missing'])
  return scores


def _needed_keys(task, args):
  if task == 'image_retrieval' and args.deeppatent:
    return ()  # deeppatent.features_by_path names what it needs
  if task == 'image_retrieval' and args.leave_one_out:
    return ('gallery', 'gallery_labels')
  return NPZ_KEYS[task]


def score_embeddings(path: str, tasks, args) -> dict:
  """Metrics from precomputed embeddings (keys per task in NPZ_KEYS; labels may be strings); with
  ``args.deeppatent`` the image-retrieval features are matched to that DeepPatent split's lists by path."""
  data = _open_npz(path)
  out = {}
  for task in tasks:
    if task == 'linear_probe':
      raise UsageError('linear_probe needs a model and a data set, not an embeddings file')
    missing = [k for k in _needed_keys(task, args) if k not in data]
    if missing:
      raise UsageError(f'{path} lacks {missing} needed for {task} (has {sorted(data.files)})')
  for task in tasks:
    if task == 'image_retrieval' and args.deeppatent:
      from designclip_jax.eval import deeppatent  # pylint: disable=import-outside-toplevel
      scores = retrieval_scores(deeppatent.features_by_path(data, args.deeppatent, args.split,
                                                            skip_missing=args.skip_missing))
    elif task == 'image_retrieval':
      keys = [k for k in NPZ_KEYS[task] + ('query_paths', 'skipped_missing') if k in data]
      scores = retrieval_scores({k: data[k] for k in keys}, leave_one_out=args.leave_one_out)
    elif task == 'multimodal_retrieval':
      image, text = data['image'], data['text']
      if len(image) == len(text):  # (unequal lengths: the metric names the mismatch)
        chosen = runner.pair_subset(len(image), args.pairs, args.pairs_seed)
        image, text = image[chosen], text[chosen]
      scores = metrics.multimodal_retrieval(image, text)
      scores.update(pairs=len(image), pairs_seed=args.pairs_seed)
    else:
      labels = data['labels']
      if labels.dtype.kind in 'US':
        raise UsageError('zero_shot labels must be integer indices into class_embeddings rows')
      scores = metrics.zero_shot(data['image'], labels, data['class_embeddings'],
                                 data['class_counts'] if 'class_counts' in data else None)
      scores.pop('per_class_acc'), scores.pop('per_class_n')
    out.update(scores)
  return runner.defined(out)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--task', nargs='+', default=['all'], choices=list(runner.TASKS) + ['all', 'prior_art'])
  p.add_argument('--citations', choices=('examiner', 'all'), default='examiner',
                 help="prior_art: the examiner's citations, or the applicant's too")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument('--checkpoint', help='training workdir, HF CLIP directory or OpenAI-format checkpoint '
                   '(.pt/.bin/.safetensors)')
  src.add_argument('--compare', nargs='+', metavar='CKPT', help='several checkpoints, side by side')
  src.add_argument('--embeddings', help='.npz of precomputed embeddings')
  p.add_argument('--data', help='ingested data set directory (with --checkpoint/--compare)')
  p.add_argument('--deeppatent', metavar='ROOT', help='DeepPatent download: list files in ROOT or ROOT/data, '
                 'image paths relative to ROOT (image_retrieval only); with --embeddings, features matched by path')
  p.add_argument('--split', default='test', help='data set split (DeepPatent: test or val)')
  p.add_argument('--skip-missing', action='store_true',
                 help='DeepPatent: leave out missing or unreadable images, or images without features in --embeddings '
                 '(counted) instead of stopping; a query left without relevant item then counts as DeepPatent counts '
                 'it (a miss in rank@k, left out of mAP)')
  p.add_argument('--leave-one-out', action='store_true',
                 help='--embeddings image retrieval where the query set is the gallery: each query ranked against '
                 "the others (pytorch-metric-learning's ref_includes_query)")
  p.add_argument('--save-embeddings', metavar='E.npz',
                 help='with --checkpoint: write the image-retrieval embeddings that --embeddings reads (DeepPatent: '
                 'with the image paths)')
  p.add_argument('--pairs', type=int, help='multimodal retrieval over a fixed seeded subset of N pairs '
                 '(the paper: 5000 of IMPACT validation); default all')
  p.add_argument('--pairs-seed', type=int, default=0)
  p.add_argument('--template', nargs='+', default=[runner.DEFAULT_TEMPLATE],
                 help='zero-shot prompt template(s) with {} for the class name; several are averaged')
  p.add_argument('--label', choices=('uspc', 'locarno'),
                 help="classes for zero-shot, the linear probe and per-class tables: USPC design classes or Locarno "
                 "classes (records without a Locarno code left out, counted); default: the training run's data.label "
                 "(its model.json), else uspc")
  p.add_argument('--batch-size', type=int, default=128)
  p.add_argument('--output', help='flat format: write the metrics as JSON here; clip_benchmark format: the '
                 'folder for one JSON per model and task')
  p.add_argument('--format', default='flat', choices=('flat', 'clip_benchmark'),
                 help="clip_benchmark: CLIP_benchmark's result layout, which `clip_benchmark build` tabulates")
  p.add_argument('--plots', action='store_true', help='write PNG plots beside --output (or in the cwd)')
  p.add_argument('--per-class', action='store_true', help='also print zero-shot accuracy per class')
  return p.parse_args(argv)


def _check_usage(args, tasks):
  if args.embeddings:
    for flag, given in (('--data', args.data), ('--save-embeddings', args.save_embeddings)):
      if given:
        raise UsageError(f'{flag} does not apply to --embeddings')
  elif not (args.data or args.deeppatent):
    raise UsageError('--data or --deeppatent is required with --checkpoint/--compare')
  if args.data and args.deeppatent:
    raise UsageError('--data and --deeppatent are two data sets: give one')
  if args.leave_one_out and (not args.embeddings or args.deeppatent or 'image_retrieval' not in tasks):
    raise UsageError('--leave-one-out applies to image_retrieval from --embeddings (DeepPatent and --data have '
                     'separate query sets)')
  other = set(args.task) - {'image_retrieval', 'all'}
  if args.deeppatent and other:
    raise UsageError(f'--deeppatent scores image_retrieval only, not {sorted(other)}')
  if args.deeppatent and (args.plots or args.per_class):  # both read our data set's class table and records
    raise UsageError('--plots and --per-class apply to --data, not --deeppatent')
  if args.label and not args.data:
    raise UsageError('--label names the classes of a --data set; --embeddings and --deeppatent bring their own labels')
  if args.skip_missing and not args.deeppatent:
    raise UsageError('--skip-missing applies to --deeppatent')
  if args.save_embeddings and not (args.checkpoint and 'image_retrieval' in tasks):
    raise UsageError('--save-embeddings needs --checkpoint (one model) and the image_retrieval task')
  if args.format == 'clip_benchmark' and not args.output:
    raise UsageError('--format clip_benchmark needs --output (a folder for the JSON files)')
  if args.pairs is not None and args.pairs < 1:
    raise UsageError(f'--pairs must be at least 1, got {args.pairs}')


def _label_scheme(args, paths) -> str:
  """--label, else the label scheme the training runs among ``paths`` were trained on (model.json), else uspc."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  from designclip_jax.weights.model_spec import SPEC_FILE, ModelSpec  # pylint: disable=import-outside-toplevel
  if args.label:
    return args.label
  trained = {ModelSpec.load(p).label for p in paths if epath.Path(p, SPEC_FILE).is_file()}
  if len(trained) > 1:
    raise UsageError(f'the runs were trained on different label schemes ({", ".join(sorted(trained))}): give --label')
  return trained.pop() if trained else 'uspc'


def _evaluate_checkpoints(args, tasks):
  """{model label: scores} for --checkpoint/--compare on --data or --deeppatent, plus plots."""
  from designclip_jax.weights.loader import load_model  # pylint: disable=import-outside-toplevel
  paths = [args.checkpoint] if args.checkpoint else args.compare
  label = _label_scheme(args, paths)
  if args.data:
    from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    pipeline.dataset_dir(args.data)  # clear error if it is not an ingested data set
    try:
      pipeline.class_table(args.data)
    except FileNotFoundError as e:
      raise UsageError(f'{args.data} is not a complete ingested data set ({e}); run python -m '
                       'designclip_jax.data.ingest') from e
  results, per_class, grids, test_counts = {}, {}, {}, None
  for path in paths:
    clip, tokenizer, normalization = load_model(path)
    name = runner.model_label(path)
    if args.deeppatent:
      from designclip_jax.eval import deeppatent  # pylint: disable=import-outside-toplevel
      emb = deeppatent.embed_split(clip, args.deeppatent, args.split, batch_size=args.batch_size,
                                   normalization=normalization, skip_missing=args.skip_missing)
      results[name] = runner.defined(retrieval_scores(emb))
      if args.save_embeddings:
        _save_npz(args.save_embeddings, emb)
      continue
    scores = runner.evaluate(clip, tokenizer, args.data, args.split, tasks, batch_size=args.batch_size,
                             template=tuple(args.template), keep_arrays=True, pixel_normalization=normalization,
                             pairs=args.pairs, pairs_seed=args.pairs_seed, label=label)
    arrays = scores.pop('_arrays')
    if 'per_query_ap' in arrays:
      scores['per_query_ap'] = _json_list(arrays['per_query_ap'])
    results[name] = scores
    if 'per_class_acc' in arrays:
      per_class[name] = arrays['per_class_acc']
      test_counts = arrays['per_class_n']
    if 'retrieval' in arrays:
      grids[name] = arrays['retrieval']
      if args.save_embeddings:
        r = arrays['retrieval']
        _save_npz(args.save_embeddings, dict(query=r['query'], query_labels=r['query_ids'], gallery=r['gallery'],
                                             gallery_labels=r['gallery_ids']))
  if _reporting():
    if args.plots:
      _write_plots(args, per_class, grids, label)
    if args.per_class and per_class:
      runner.print_per_class(per_class, pipeline.label_table(args.data, label), test_counts)
  return results


def _reporting() -> bool:
  import jax  # pylint: disable=import-outside-toplevel
  return jax.process_index() == 0


def _output_file(path: str, mode: str):
  """``path`` opened for writing, local (its folder made) or in a bucket (gs://…)."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  epath.Path(absolute(path)).parent.mkdir(parents=True, exist_ok=True)
  return epath.Path(path).open(mode)


def _save_npz(path, arrays):
  if not _reporting():
    return
  path = path if path.endswith('.npz') else path + '.npz'  # as np.savez names a file it is given by name
  with _output_file(path, 'wb') as f:
    np.savez(f, **arrays)
  print('wrote', path)


def _write_json(path, value):
  with _output_file(path, 'w') as f:
    json.dump(value, f, indent=1, allow_nan=False)  # undefined metrics are null, never a bare NaN


def clip_benchmark_records(scores: dict, tasks, *, dataset: str, model: str, pretrained: str) -> dict:
  """{task: CLIP_benchmark result dict} (``dataset``, ``model``, ``pretrained``, ``task``, flat ``metrics``,
  ``language``): CLIP_benchmark's metric names where it has one, ours otherwise; undefined metrics (e.g. rank@k
  past the gallery size) left out, as DeepPatent's code leaves them out."""
  out = {}
  for task in tasks:
    keys = [k for k in runner.TABLE_KEYS[task] + TASK_KEYS.get(task, ()) if scores.get(k) is not None]
    out[task] = {'dataset': dataset, 'model': model, 'pretrained': pretrained, 'task': CLIP_BENCHMARK_TASKS[task],
                 'metrics': {CLIP_BENCHMARK_NAMES.get(k, k): scores[k] for k in keys}, 'language': 'en'}
  return out


def _write_outputs(args, results, tasks, dataset):
  from designclip_jax import provenance  # pylint: disable=import-outside-toplevel
  made_by = provenance.record(vars(args), args.data)  # the code, these arguments, the data set's fingerprint
  if args.format == 'clip_benchmark':
    sources = {runner.model_label(p): p for p in ([args.checkpoint] if args.checkpoint else args.compare or [])}
    for name, scores in results.items():
      records = clip_benchmark_records(scores, tasks, dataset=dataset, model=name,
                                       pretrained=sources.get(name, name))
      for record in records.values():
        # CLIP_benchmark's default file name: {dataset}_{pretrained}_{model}_{language}_{task}.json
        slug = '_'.join(x.replace('/', '_') for x in (dataset, name, name, record['language'], record['task']))
        _write_json(os.path.join(args.output, slug + '.json'), record)
        print('wrote', os.path.join(args.output, slug + '.json'))
    _write_json(os.path.join(args.output, 'provenance.json'), made_by)  # CLIP_benchmark's records have fixed keys
  else:
    _write_json(args.output, {**(next(iter(results.values())) if len(results) == 1 else results),
                              'provenance': made_by})


def run(args) -> dict:
  if 'prior_art' in args.task:
    from designclip_jax.eval import prior_art_cli  # pylint: disable=import-outside-toplevel
    return prior_art_cli.run(args)
  tasks = list(runner.TASKS) if 'all' in args.task else list(dict.fromkeys(args.task))
  if args.deeppatent:
    tasks = ['image_retrieval']
  _check_usage(args, tasks)
  if args.embeddings:
    if 'all' in args.task and not args.deeppatent:  # every task whose arrays the file holds
      files = _open_npz(args.embeddings).files
      tasks = [t for t in NPZ_KEYS if all(k in files for k in _needed_keys(t, args))]
    results = {os.path.basename(args.embeddings): score_embeddings(args.embeddings, tasks, args)}
    dataset = (f'deeppatent_{args.split}' if args.deeppatent else
               os.path.splitext(os.path.basename(args.embeddings))[0])
  else:
    results = _evaluate_checkpoints(args, tasks)
    dataset = f'deeppatent_{args.split}' if args.deeppatent else f'{runner.model_label(args.data)}_{args.split}'
  if _reporting():
    runner.print_table(results)
    if args.output:
      _write_outputs(args, results, tasks, dataset)
  return results


def _write_plots(args, per_class, grids, label):
  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from designclip_jax.eval import plots  # pylint: disable=import-outside-toplevel
  folder = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()
  os.makedirs(folder, exist_ok=True)
  table = pipeline.label_table(args.data, label)
  if per_class:
    print('wrote', plots.long_tail(per_class, table['train_counts'], table['codes'],
                                   os.path.join(folder, 'long_tail.png')))
  for name, retrieval in grids.items():
    print('wrote', plots.retrieval_grid(retrieval, os.path.join(folder, f'retrieval_{name}.png')))


def main(argv=None):
  args = parse_args(argv)
  if os.environ.get('DESIGNCLIP_DISTRIBUTED') == '1':
    import jax  # pylint: disable=import-outside-toplevel
    if not jax.distributed.is_initialized():
      jax.distributed.initialize()  # the cluster (Cloud TPU, SLURM, ...) is detected by JAX
  try:
    run(args)
  except (UsageError, ValueError, FileNotFoundError) as e:  # ModelSourceError is a ValueError
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
