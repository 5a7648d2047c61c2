"""The pretrained starting point of the fine-tuning ablation study (bench/ablations.py --study finetune):
the tiny CLIP towers pretrained with the plain CLIP objective (image-caption InfoNCE only: no class
information, natural sampling, no fusion head, no multi-view loss) on a synthetic corpus the study never
evaluates on (another generator seed, 20,000 patents against the study's 1,500), then saved as a Hugging
Face CLIP directory, so fine-tuning starts from it as a user starts from OpenAI's weights
(--config.model.init=DIR; add --config.model.pixel_normalization=sketch: the directory does not say how its
towers expect drawings normalised, and the default is CLIP's).

    python bench/pretrained_start.py                  # build (or reuse) it; prints its path, cost and scores

Deterministic on one machine class: the same code builds the same weights there (their sha256 is recorded;
XLA's reduction order may differ on other CPUs). Resumable: pretraining resumes from its newest checkpoint
after an interruption (then train_seconds counts only the last process), and a finished export is reused.
"""

import hashlib
import json
import os
import time

PATENTS, SEED, STEPS, BATCH, LEARNING_RATE = 20_000, 1, 1500, 64, 1e-3
PIXEL_NORMALIZATION = 'sketch'  # the towers learn white-is-zero drawings; fine-tuning must feed them the same
WEIGHTS = 'model.safetensors'


def default_dir() -> str:
  from designclip_jax.data.prepare import cache_root
  return os.path.join(cache_root(), f'pretrained-tiny-p{PATENTS}-s{SEED}-{STEPS}x{BATCH}')


def pretrain_config():
  from designclip_jax.train.config import base_config
  c = base_config()
  c.model.preset = 'tiny'
  c.model.fusion_width = 128
  c.model.pixel_normalization = PIXEL_NORMALIZATION
  c.data.context_length = 48
  c.data.synthetic_patents = PATENTS
  c.data.synthetic_seed = SEED
  c.loss.lambdas = (0.0, 1.0, 0.0)  # plain CLIP: the fusion head gets no gradient and is not exported
  c.loss.beta_sample = 0.0
  c.loss.beta_loss = 0.0
  c.train.update(dict(steps=STEPS, global_batch=BATCH, learning_rate=LEARNING_RATE, warmup_steps=STEPS // 10,
                      weight_decay=0.1, seed=0, log_every=100, checkpoint_every=250, keep_checkpoints=1))
  c.eval.tasks = ()
  return c


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def test_scores(clip, tokenizer, data_dir: str, pixel_normalization: str, progress: bool = False) -> dict:
  """Every eval task on the test split, with per-class zero-shot accuracy (None for a class without test
  patents): how the study scores its runs and the pretrained start alike."""
  from designclip_jax.eval import runner
  scores = runner.evaluate(clip, tokenizer, data_dir, 'test', runner.TASKS, progress=progress, keep_arrays=True,
                           pixel_normalization=pixel_normalization)
  scores['per_class_acc'] = [None if x != x else float(x) for x in scores.pop('_arrays')['per_class_acc']]
  return scores


def ensure(out: str | None = None, progress: bool = True) -> dict:
  """Pretrain (or resume, or reuse) and export; returns the record of what was built: the HF directory, the
  weights' sha256, what pretraining cost, and how the exported model scores on the study's test split
  before any fine-tuning (the study's 'pretrained' row)."""
  from designclip_jax.data.prepare import ensure_dataset
  from designclip_jax.train.loop import train_and_evaluate
  from designclip_jax.weights import hf_format
  from designclip_jax.weights.loader import load_model
  out = out or default_dir()
  hf_dir, info_path = os.path.join(out, 'hf'), os.path.join(out, 'pretrained.json')
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
    if os.path.exists(os.path.join(hf_dir, WEIGHTS)) and sha256(os.path.join(hf_dir, WEIGHTS)) == info['sha256']:
      return info
  config = pretrain_config()
  start = time.perf_counter()
  corpus = ensure_dataset(config.data)
  data_seconds = time.perf_counter() - start
  start = time.perf_counter()
  train_and_evaluate(config, os.path.join(out, 'run'))
  train_seconds = time.perf_counter() - start
  clip, tokenizer, _ = load_model(os.path.join(out, 'run'))
  hf_format.save_pretrained(clip, hf_dir, tokenizer)
  # the study's own test split (generator seed 0, 1,500 patents), before fine-tuning
  from designclip_jax.train.config import base_config
  study_data = base_config().data
  study_data.context_length = config.data.context_length
  scores = test_scores(clip, tokenizer, ensure_dataset(study_data), PIXEL_NORMALIZATION, progress)
  from designclip_jax.data import pipeline
  info = {'hf_dir': hf_dir, 'sha256': sha256(os.path.join(hf_dir, WEIGHTS)),
          'pixel_normalization': PIXEL_NORMALIZATION,
          'corpus': {'synthetic_patents': PATENTS, 'synthetic_seed': SEED,
                     'train_records': int(sum(pipeline.class_table(corpus)['train_counts']))},
          'objective': 'image-caption InfoNCE only (lambdas 0, 1, 0), natural sampling, beta 0',
          'steps': STEPS, 'batch': BATCH, 'learning_rate': LEARNING_RATE, 'examples_seen': STEPS * BATCH,
          'corpus_seconds': round(data_seconds, 1), 'train_seconds': round(train_seconds, 1),
          'scores_on_study_test_split': scores}
  with open(info_path, 'w') as f:
    json.dump(info, f, indent=1)
  return info


def main():
  import argparse
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', default=None, help='default: under the data cache (DESIGNCLIP_CACHE)')
  args = parser.parse_args()
  info = ensure(args.out)
  scores = info['scores_on_study_test_split']
  print(json.dumps({k: v for k, v in info.items() if k != 'scores_on_study_test_split'}, indent=1))
  print({m: round(scores[m], 4) for m in ('top1', 'balanced_acc', 'tail_acc', 'mAP', 't2i_R@5', 'probe_acc')})


if __name__ == '__main__':
  main()
