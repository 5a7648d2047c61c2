"""Local multi-process runs for jax.distributed tests: a free port, and N workers run to completion with
a timeout (if one dies the others would wait for the heartbeat timeout)."""

import os
import socket
import subprocess
import sys

import pytest


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_workers(argvs, *, timeout: float = 240) -> list[str]:
  """Run ``python argv`` for every argv at once (without the parent's XLA_FLAGS); each worker's output.
  Fails the test if one times out or exits non-zero."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  procs = [subprocess.Popen([sys.executable] + list(argv), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for argv in argvs]
  outputs = []
  for p in procs:
    try:
      outputs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail(f'multi-process run timed out after {timeout} s')
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs
