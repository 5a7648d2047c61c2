"""Per-chip figures of the accelerators the code knows (Cloud TPU generations): HBM, peak bf16 compute, HBM
bandwidth, cores. The AOT report bounds a step with them; training divides its measured step by them (MFU).
Kept apart from ``aot`` so that training needs neither the AOT tool nor libtpu's settings."""

from __future__ import annotations

import dataclasses

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip figures of a Cloud TPU generation."""
  name: str
  hbm_bytes: int
  bf16_flops: float  # peak dense bf16 FLOP/s
  hbm_bytes_per_s: float
  cores: int  # TensorCores per chip (Cloud TPU slice names such as v4-32 count cores)
  # two TensorCores driven as one device, as JAX runs v4 and v5p (without it the topology lists every core)
  megacore: bool = False


# Google Cloud TPU documentation, system architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p,
# /v6e): HBM capacity, HBM bandwidth and peak bf16 compute per chip.
CHIPS = {
    'v4': Chip('TPU v4', 32 * GIB, 275e12, 1228e9, 2, megacore=True),
    'v5e': Chip('TPU v5e', 16 * GIB, 197e12, 819e9, 1),
    'v5p': Chip('TPU v5p', 95 * GIB, 459e12, 2765e9, 2, megacore=True),
    'v6e': Chip('TPU v6e', 32 * GIB, 918e12, 1640e9, 1),
}
# JAX's device_kind of each generation: the runtime's names ('lite' chips are the e generations), and the
# marketing names some releases report instead.
DEVICE_KINDS = {'TPU v4': 'v4', 'TPU v5 lite': 'v5e', 'TPU v5e': 'v5e', 'TPU v5': 'v5p', 'TPU v5p': 'v5p',
                'TPU v6 lite': 'v6e', 'TPU v6e': 'v6e'}


def chip_of_device(device) -> Chip | None:
  """The chip a JAX device (a real one, or an abstract one of a topology) runs on; None for a device this table
  has no figures for (CPU, GPU, a TPU generation not listed)."""
  generation = DEVICE_KINDS.get(getattr(device, 'device_kind', ''))
  return CHIPS[generation] if generation else None
