"""Shared fixtures. Tests run on CPU; sharding tests ask for 8 host devices via XLA_FLAGS."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import atexit
import pathlib
import shutil
import tempfile

import jax
import pytest
from absl import flags

# Many tests compile the same programs (every resumed run, every second run re-jits its step): XLA's
# persistent cache turns those into cache hits. A fresh directory per session, so nothing stale is reused.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # set in the environment so subprocesses share it
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='designclip-xla-cache-')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

# Grain worker processes read absl flags; an unparsed FLAGS object makes them crash.
flags.FLAGS.mark_as_parsed()

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / 'shared'
IMPACT_SAMPLE = SHARED / 'data' / 'impact-sample'


@pytest.fixture
def impact_sample():
  if not (IMPACT_SAMPLE / 'sample_data.csv').is_file():
    pytest.skip(f'real IMPACT sample not found at {IMPACT_SAMPLE} (only present beside the CI checkout)')
  return IMPACT_SAMPLE


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory):
  """A small synthetic set, generated and ingested once per test session: (csv, raw dir, data dir)."""
  from designclip_jax.data import ingest, synthetic
  root = tmp_path_factory.mktemp('synthetic')
  csv_path = synthetic.generate(str(root / 'raw'), 132, seed=3, workers=2, progress=False)
  ingest.ingest(csv_path, str(root / 'raw'), str(root / 'data'), image_size=64, workers=2,
                tokenizer_vocab=512, context_length=32, progress=False)
  return csv_path, str(root / 'raw'), str(root / 'data')
