"""Locate the training data set, building the embedded synthetic one on first use."""

from __future__ import annotations

import logging
import os
import shutil

from designclip_jax.data import ingest, synthetic

_DONE = '.complete'


def cache_root() -> str:
  return os.environ.get('DESIGNCLIP_CACHE', os.path.join(os.path.expanduser('~'), '.cache', 'designclip_jax'))


def synthetic_dir(patents: int, seed: int, image_size: int, vocab: int) -> str:
  return os.path.join(cache_root(), f'synthetic-p{patents}-s{seed}-i{image_size}-v{vocab}')


def ensure_dataset(data_cfg) -> str:
  """``data_cfg.dir`` if set (it must be an ingested data set); else the synthetic set, generated and
  ingested into the cache once (a marker file makes an interrupted build start over)."""
  if data_cfg.dir:
    return data_cfg.dir
  out = synthetic_dir(data_cfg.synthetic_patents, data_cfg.synthetic_seed, data_cfg.stored_image_size,
                      data_cfg.tokenizer_vocab)
  if os.path.exists(os.path.join(out, _DONE)):
    return out
  shutil.rmtree(out, ignore_errors=True)
  raw = out + '.raw'
  logging.info('building the synthetic data set in %s (first use only)', out)
  csv_path = synthetic.generate(raw, data_cfg.synthetic_patents, data_cfg.synthetic_seed)
  summary = ingest.ingest(csv_path, raw, out, image_size=data_cfg.stored_image_size,
                          tokenizer_vocab=data_cfg.tokenizer_vocab, context_length=data_cfg.context_length)
  ingest.print_summary(summary)
  shutil.rmtree(raw, ignore_errors=True)
  open(os.path.join(out, _DONE), 'w').close()
  return out
