"""Shared by tests/test_allocator.py and tests/test_launch.py: the environment without a preload, and
scripts/allocator.sh's functions run in bash."""

import os
import pathlib
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = ROOT / 'scripts' / 'allocator.sh'


def env(**extra):
  """os.environ without a preload or the scripts' switches, plus ``extra``."""
  out = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', 'DESIGNCLIP_ALLOCATOR', 'DRY_RUN')}
  out.update(extra)
  return out


def shell(script, cwd=None, **extra):
  """Run ``script`` in bash after sourcing scripts/allocator.sh; (exit status, stdout, stderr)."""
  out = subprocess.run(['bash', '-c', f'set -euo pipefail; source {shlex.quote(str(HELPER))}; {script}'],
                       env=env(**extra), capture_output=True, text=True, cwd=cwd)
  return out.returncode, out.stdout.strip(), out.stderr.strip()


def library(name, venv=sys.prefix):
  """The allocator's library as the scripts find it, or None."""
  status, out, _ = shell(f'allocator_library {name} {shlex.quote(str(venv))}')
  return out if status == 0 else None


def mimalloc():
  lib = library('mimalloc')
  assert lib, f'no libmimalloc.so.3 in {sys.prefix}: cmeel-mimalloc is a default dependency (pip install -e .)'
  return lib


def first_choice():
  """What use_fast_allocator preloads: the OS's tcmalloc where installed, else the wheel's mimalloc."""
  return library('tcmalloc') or mimalloc()
