"""What a run or an evaluation ran: the code (package version, git commit, a hash of the package's source),
the config, and a fingerprint of the data set; and, on a multi-host job, the check that every host runs the
same three (a host on another checkout, config or copy of the data would otherwise train silently apart or
hang in a collective)."""

from __future__ import annotations

import collections
import datetime
import functools
import hashlib
import json
import os
import socket
import subprocess

import numpy as np
from etils import epath

import designclip_jax
from designclip_jax.data import pipeline
from designclip_jax.data.layout import CLASSES_FILE, TOKENIZER_DIR

PACKAGE_DIR = os.path.dirname(os.path.abspath(designclip_jax.__file__))
# Settings that may differ between the hosts of one job: who the host is, and how it feeds itself.
HOST_LOCAL_SETTINGS = ('distributed', 'data.worker_count')


class HostsDisagreeError(ValueError):
  """The hosts of a job run different code, config or data; the message names the odd ones."""


@functools.cache
def code_identity() -> dict:
  """The package's version; its commit (``git describe --always --dirty``) when it runs from a git checkout of
  this repository, else the commit launch/tpu_pod.sh stamped into the wheel it built (BUILD_COMMIT), else None;
  a SHA-256 of its source files, which also tells two dirty checkouts apart."""
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(PACKAGE_DIR):
    dirs[:] = sorted(d for d in dirs if d != '__pycache__')
    for name in sorted(f for f in files if f.endswith('.py')):
      path = os.path.join(root, name)
      digest.update(os.path.relpath(path, PACKAGE_DIR).encode() + b'\0')
      with open(path, 'rb') as f:
        digest.update(f.read() + b'\0')
  return {'package': 'designclip_jax', 'version': designclip_jax.__version__,
          'commit': _git_describe() or _build_commit(), 'source_sha256': digest.hexdigest()}


def _build_commit() -> str | None:
  try:
    with open(os.path.join(PACKAGE_DIR, 'BUILD_COMMIT')) as f:
      return f.read().strip() or None
  except FileNotFoundError:
    return None


def _git_describe() -> str | None:
  checkout = os.path.dirname(PACKAGE_DIR)
  try:
    top = subprocess.run(['git', '-C', checkout, 'rev-parse', '--show-toplevel'], capture_output=True, text=True,
                         timeout=10)
    # a wheel installed in a virtual environment inside some other checkout is not that checkout's code
    if top.returncode or os.path.realpath(top.stdout.strip()) != os.path.realpath(checkout):
      return None
    described = subprocess.run(['git', '-C', checkout, 'describe', '--always', '--dirty', '--abbrev=12'],
                               capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):  # no git on this machine
    return None
  return described.stdout.strip() or None


def data_fingerprint(data_dir: str) -> str:
  """SHA-256 over the files that identify an ingested data set without reading its shards: the TFDS metadata
  (split sizes in records and bytes, features), the class table, the tokenizer and the record index of every
  split (patent id, class and views of every record). A few MB at IMPACT's scale, local or in a bucket."""
  digest = hashlib.sha256()
  tfds_dir, root = epath.Path(pipeline.dataset_dir(data_dir)), epath.Path(data_dir)
  tokenizer = root / TOKENIZER_DIR
  files = [tfds_dir / 'dataset_info.json', tfds_dir / 'features.json', root / CLASSES_FILE]
  files += sorted(tokenizer.iterdir()) if tokenizer.is_dir() else []
  files += sorted(root.glob('record_index-*.npz'))
  for path in files:
    if path.is_file():
      digest.update(f'{path.name}\0'.encode())
      if path.suffix == '.npz':  # its arrays: the zip's bytes hold the time of writing, so two ingests differ
        with path.open('rb') as f, np.load(f) as arrays:
          for key in sorted(arrays.files):
            digest.update(f'{key}\0{arrays[key].dtype.str}\0{arrays[key].shape}\0'.encode() + arrays[key].tobytes())
      else:
        digest.update(path.read_bytes())
  return digest.hexdigest()


def record(config: dict, data_dir: str | None = None) -> dict:
  """The provenance a run or an evaluation writes beside its results."""
  import jax  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  return {'code': code_identity(), 'config': config,
          'data': {'dir': data_dir, 'fingerprint': data_fingerprint(data_dir) if data_dir else None},
          'processes': jax.process_count(), 'devices': len(devices), 'device_kind': devices[0].device_kind,
          'jax': jax.__version__, 'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def flat_config(config: dict) -> dict:
  """{'a.b': value} of a nested config, without the settings each host may set for itself."""
  flat = {}

  def walk(prefix, node):
    for key, value in node.items():
      name = f'{prefix}{key}'
      if any(name == s or name.startswith(s + '.') for s in HOST_LOCAL_SETTINGS):
        continue
      if isinstance(value, dict):
        walk(name + '.', value)
      else:
        flat[name] = value

  walk('', config)
  return json.loads(json.dumps(flat, sort_keys=True, default=str))  # tuples as lists, as JSON gives them back


def check_hosts_agree(code: dict, config: dict, data: str) -> None:
  """Every process of the job calls this at start; it returns when all run the same code (source hash), config
  (less HOST_LOCAL_SETTINGS) and data (fingerprint), and otherwise raises HostsDisagreeError on every process
  with the same one line, naming the processes that differ from the majority (process 0's side on a tie) and
  what differs. One all-gather of three hashes; the details are gathered only when they differ."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  if jax.process_count() == 1:
    return
  mine = {'code': code, 'config': flat_config(config), 'data': data, 'host': socket.gethostname()}
  compared = (code['source_sha256'], mine['config'], data)  # the source, not where it was installed from
  digests = np.stack([np.frombuffer(hashlib.sha256(json.dumps(x, sort_keys=True).encode()).digest()[:16], np.uint32)
                      for x in compared])
  gathered = np.asarray(multihost_utils.process_allgather(digests))  # (processes, 3, 4)
  if (gathered == gathered[0]).all():
    return
  everyone = _allgather_json(mine)
  keys = [row.tobytes() for row in gathered]
  common = max(collections.Counter(keys).items(), key=lambda kv: (kv[1], -keys.index(kv[0])))[0]
  reference = keys.index(common)
  odd = [p for p, key in enumerate(keys) if key != common]
  ref = everyone[reference]
  parts = []
  for p in odd[:3]:
    other, what = everyone[p], []
    if other['code']['source_sha256'] != ref['code']['source_sha256']:
      what.append(f'code {_code_label(other["code"])} vs {_code_label(ref["code"])}')
    changed = sorted(k for k in set(other['config']) | set(ref['config'])
                     if other['config'].get(k, '<unset>') != ref['config'].get(k, '<unset>'))
    if changed:
      what.append('config ' + ', '.join(f'{k}={other["config"].get(k, "<unset>")!r} vs '
                                        f'{ref["config"].get(k, "<unset>")!r}' for k in changed[:4])
                  + (f' (+{len(changed) - 4} more)' if len(changed) > 4 else ''))
    if other['data'] != ref['data']:
      what.append(f'data set fingerprint {other["data"][:12]} vs {ref["data"][:12]}')
    parts.append(f'process {p} (host {other["host"]}): ' + '; '.join(what))
  more = f' (and {len(odd) - 3} more processes)' if len(odd) > 3 else ''
  raise HostsDisagreeError(f'the {len(keys)} processes of this job do not run the same code, config and data; '
                           f'against process {reference} (host {ref["host"]}): ' + ' | '.join(parts) + more)


def _code_label(code: dict) -> str:
  return f'{code["version"]}@{code["commit"] or "installed"} (source {code["source_sha256"][:12]})'


def _allgather_json(value) -> list:
  """Every process's ``value`` (JSON-serialisable), in process order."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  data = np.frombuffer(json.dumps(value, sort_keys=True).encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int32))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = data
  rows = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(row[:n].tobytes().decode()) for row, n in zip(rows, lengths)]
