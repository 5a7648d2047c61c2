"""Cloud TPU chips (HBM, peak compute) and the abstract devices of a topology, without a TPU.

With libtpu installed (`pip install -e '.[aot]'`), ``jax.experimental.topologies`` describes a TPU slice
whose devices a mesh can hold; ``topology='cpu'`` uses this machine's own devices instead.
"""

from __future__ import annotations

import os

# libtpu would otherwise look for a GCE metadata server, and refuse to load while another process on this
# machine holds its lock file (any JAX process that probed for a TPU); compiling needs neither
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

import jax  # noqa: E402  (after the libtpu environment setting)

from designclip_jax import sharding  # noqa: E402
from designclip_jax.accelerators import CHIPS, GIB, Chip  # noqa: E402,F401  (the chip table lives below aot)

CPU = 'cpu'


class AotError(ValueError):
  """A config that cannot be compiled as asked (bad topology, mesh or batch), with the reason."""


def chip_of(topology: str) -> Chip | None:
  """The chip of a topology name such as 'v5e:4x4' or 'v4:2x2x4'; None for 'cpu'."""
  if topology == CPU:
    return None
  generation = topology.split(':')[0].lower()
  if generation not in CHIPS:
    raise AotError(f"topology {topology!r}: unknown TPU generation {generation!r}; use one of "
                   f"{sorted(CHIPS)} as '<generation>:<shape>' (e.g. 'v5e:4x4', 'v4:2x2x4', 'v5p:2x2x2') or 'cpu'")
  return CHIPS[generation]


def topology_devices(topology: str, num_slices: int = 1) -> list:
  """Abstract TPU devices of a topology (no TPU needed, libtpu is), or this machine's CPU devices."""
  if topology == CPU:
    if num_slices != 1:
      raise AotError(f'mesh.slices={num_slices}: the cpu topology is a single slice')
    return jax.devices(CPU)
  chip = chip_of(topology)
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    return list(topologies.get_topology_desc(platform='tpu', topology_name=topology, num_slices=num_slices,
                                             chip_config_name='megacore' if chip.megacore else 'default').devices)
  except Exception as e:  # pylint: disable=broad-except  (libtpu absent, or a shape it does not know)
    raise AotError(f'cannot describe TPU topology {topology!r} (num_slices={num_slices}): {e}. '
                   "Is libtpu installed (pip install -e '.[aot]')? Shapes are chips per axis, e.g. v5e:4x4, "
                   'v4:2x2x4') from e


def host_memory_bytes() -> int:
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def make_mesh(mesh_cfg, devices):
  try:
    return sharding.make_mesh(mesh_cfg.data, mesh_cfg.fsdp, devices=devices, slices=mesh_cfg.get('slices', 1))
  except ValueError as e:
    raise AotError(f'{e} (mesh.data={mesh_cfg.data}, mesh.fsdp={mesh_cfg.fsdp}, {len(devices)} chips)') from e
