"""Benchmark CLIP models on design patents the way the field reports them.

    python -m designclip_jax.eval --checkpoint RUN_DIR_OR_HF_DIR --data DATA_DIR --task all
    python -m designclip_jax.eval --compare openai_clip/ runs/tiny/ --data DATA_DIR --output cmp.json
    python -m designclip_jax.eval --embeddings emb.npz --task image_retrieval --output scores.json

A checkpoint is a training workdir (model.json + Orbax checkpoints; the newest step is used) or a
Hugging Face CLIP directory (config.json + model.safetensors + tokenizer files) or an OpenAI-format
checkpoint (OpenAI's RN50.pt / ViT-B-32.pt, open_clip's safetensors) with tokenizer files beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from designclip_jax.eval import metrics, runner

NPZ_KEYS = {
    'image_retrieval': ('query', 'query_labels', 'gallery', 'gallery_labels'),
    'multimodal_retrieval': ('image', 'text'),
    'zero_shot': ('image', 'labels', 'class_embeddings'),
}


class UsageError(Exception):
  pass


def score_embeddings(path: str, tasks) -> dict:
  """Metrics from precomputed embeddings (keys per task in NPZ_KEYS; labels may be strings)."""
  if not os.path.isfile(path):
    raise UsageError(f'--embeddings {path!r} does not exist')
  data = np.load(path, allow_pickle=False)
  out = {}
  for task in tasks:
    if task == 'linear_probe':
      raise UsageError('linear_probe needs a model and a data set, not an embeddings file')
    missing = [k for k in NPZ_KEYS[task] if k not in data]
    if missing:
      raise UsageError(f'{path} lacks {missing} needed for {task} (has {sorted(data.files)})')
  for task in tasks:
    if task == 'image_retrieval':
      scores = metrics.image_retrieval(data['query'], data['query_labels'], data['gallery'], data['gallery_labels'])
      scores.pop('per_query_ap')
    elif task == 'multimodal_retrieval':
      scores = metrics.multimodal_retrieval(data['image'], data['text'])
    else:
      labels = data['labels']
      if labels.dtype.kind in 'US':
        raise UsageError('zero_shot labels must be integer indices into class_embeddings rows')
      scores = metrics.zero_shot(data['image'], labels, data['class_embeddings'],
                                 data['class_counts'] if 'class_counts' in data else None)
      scores.pop('per_class_acc'), scores.pop('per_class_n')
    out.update(scores)
  return out


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--task', nargs='+', default=['all'], choices=list(runner.TASKS) + ['all'])
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument('--checkpoint', help='training workdir, HF CLIP directory or OpenAI-format checkpoint '
                   '(.pt/.bin/.safetensors)')
  src.add_argument('--compare', nargs='+', metavar='CKPT', help='several checkpoints, side by side')
  src.add_argument('--embeddings', help='.npz of precomputed embeddings')
  p.add_argument('--data', help='ingested data set directory (with --checkpoint/--compare)')
  p.add_argument('--split', default='test')
  p.add_argument('--template', nargs='+', default=[runner.DEFAULT_TEMPLATE],
                 help='zero-shot prompt template(s) with {} for the class name; several are averaged')
  p.add_argument('--batch-size', type=int, default=128)
  p.add_argument('--output', help='write the flat metrics as JSON here')
  p.add_argument('--plots', action='store_true', help='write PNG plots beside --output (or in the cwd)')
  p.add_argument('--per-class', action='store_true', help='also print zero-shot accuracy per class')
  return p.parse_args(argv)


def run(args) -> dict:
  tasks = list(runner.TASKS) if 'all' in args.task else list(dict.fromkeys(args.task))
  if args.embeddings:
    if 'all' in args.task:  # every task whose arrays the file holds
      if not os.path.isfile(args.embeddings):
        raise UsageError(f'--embeddings {args.embeddings!r} does not exist')
      files = np.load(args.embeddings).files
      tasks = [t for t, keys in NPZ_KEYS.items() if all(k in files for k in keys)]
    results = {os.path.basename(args.embeddings): score_embeddings(args.embeddings, tasks)}
  else:
    if not args.data:
      raise UsageError('--data is required with --checkpoint/--compare')
    from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    pipeline.dataset_dir(args.data)  # clear error if it is not an ingested data set
    results, per_class, grids = {}, {}, {}
    for path in ([args.checkpoint] if args.checkpoint else args.compare):
      from designclip_jax.weights.loader import load_model  # pylint: disable=import-outside-toplevel
      clip, tokenizer, normalization = load_model(path)
      scores = runner.evaluate(clip, tokenizer, args.data, args.split, tasks, batch_size=args.batch_size,
                               template=tuple(args.template), keep_arrays=True,
                               pixel_normalization=normalization)
      arrays, records = scores.pop('_arrays'), scores.pop('_records')
      name = runner.model_label(path)
      results[name] = scores
      if 'per_class_acc' in arrays:
        per_class[name] = arrays['per_class_acc']
        test_counts = arrays['per_class_n']
      if 'retrieval' in arrays:
        grids[name] = (records, arrays['retrieval'])
    if args.plots:
      _write_plots(args, per_class, grids)
    if args.per_class and per_class:
      runner.print_per_class(per_class, pipeline.class_table(args.data), test_counts)
  runner.print_table(results)
  if args.output:
    flat = next(iter(results.values())) if len(results) == 1 else results
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, 'w') as f:
      json.dump(flat, f, indent=1)
  return results


def _write_plots(args, per_class, grids):
  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from designclip_jax.eval import plots  # pylint: disable=import-outside-toplevel
  folder = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()
  os.makedirs(folder, exist_ok=True)
  table = pipeline.class_table(args.data)
  if per_class:
    print('wrote', plots.long_tail(per_class, table['train_counts'], table['codes'],
                                   os.path.join(folder, 'long_tail.png')))
  for name, (records, retrieval) in grids.items():
    print('wrote', plots.retrieval_grid(records, retrieval, os.path.join(folder, f'retrieval_{name}.png')))


def main(argv=None):
  args = parse_args(argv)
  try:
    run(args)
  except (UsageError, ValueError, FileNotFoundError) as e:  # ModelSourceError is a ValueError
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
