"""Ahead-of-time compilation of a config's real train step for a Cloud TPU topology, without a TPU.

With libtpu installed (`pip install -e '.[aot]'`), ``jax.experimental.topologies`` describes a TPU slice
and ``jit(...).lower(...).compile()`` over a mesh of its abstract devices runs the real XLA:TPU compiler:
its memory and cost analysis are those of the program a pod would run. Every input is a
``ShapeDtypeStruct`` placed by a ``NamedSharding`` (shapes from ``nnx.eval_shape``): nothing is allocated.
``topology='cpu'`` compiles for this machine's own devices instead (no libtpu needed).

Modules: ``topology`` (chips, their HBM and peaks, abstract devices, the mesh), ``compile`` (sharded
shapes, lower, compile, XLA's analyses), ``report`` (the Report, roofline bound, advice, collectives).
"""

from designclip_jax.aot.compile import compile_config, model_spec
from designclip_jax.aot.report import Report, collectives, roofline, write_json
from designclip_jax.aot.topology import CHIPS, CPU, GIB, AotError, Chip, chip_of, topology_devices

__all__ = ['AotError', 'CHIPS', 'CPU', 'Chip', 'GIB', 'Report', 'chip_of', 'collectives', 'compile_config',
           'model_spec', 'roofline', 'topology_devices', 'write_json']
