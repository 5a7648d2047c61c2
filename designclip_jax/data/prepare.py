"""Locate the training data set, building the embedded synthetic one on first use."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil

from designclip_jax.data import ingest, synthetic


def cache_root() -> str:
  return os.environ.get('DESIGNCLIP_CACHE', os.path.join(os.path.expanduser('~'), '.cache', 'designclip_jax'))


def synthetic_dir(patents: int, seed: int, image_size: int, vocab: int) -> str:
  # -f3: data sets whose record index holds family ids (older caches are rebuilt, not misread)
  return os.path.join(cache_root(), f'synthetic-p{patents}-s{seed}-i{image_size}-v{vocab}-f3')


def ensure_dataset(data_cfg) -> str:
  """``data_cfg.dir`` if set (it must be an ingested data set); else the synthetic set, generated and
  ingested into the cache once (an interrupted ingestion resumes; the drawings are generated anew)."""
  if data_cfg.dir:
    return data_cfg.dir
  out = synthetic_dir(data_cfg.synthetic_patents, data_cfg.synthetic_seed, data_cfg.stored_image_size,
                      data_cfg.tokenizer_vocab)
  if ingest.is_finished(out):
    return out
  os.makedirs(os.path.dirname(out), exist_ok=True)
  # several processes sharing a cache (one machine, or a shared home): one builds, the others wait and reuse
  with open(out + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not ingest.is_finished(out):
      _build_synthetic(data_cfg, out)
  return out


def _build_synthetic(data_cfg, out: str) -> None:
  raw = out + '.raw'
  logging.info('building the synthetic data set in %s (first use only)', out)
  csv_path = synthetic.generate(raw, data_cfg.synthetic_patents, data_cfg.synthetic_seed)
  summary = ingest.ingest(csv_path, raw, out, image_size=data_cfg.stored_image_size,
                          tokenizer_vocab=data_cfg.tokenizer_vocab, context_length=data_cfg.context_length)
  ingest.print_summary(summary)
  shutil.rmtree(raw, ignore_errors=True)
