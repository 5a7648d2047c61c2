"""Config variants for bench/aot_table.py with fewer tower layers (``model.overrides`` holds no keys a
command line could override): ``--config=bench/aot_variants.py:NAME`` with NAME one of VARIANTS."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (shipped config, layers per tower)
VARIANTS = {'vitb16_2layers': ('impact_vitb16.py', 2)}


def get_config(name):
  if name not in VARIANTS:
    raise ValueError(f'unknown variant {name!r}; one of {sorted(VARIANTS)}')
  path, layers = VARIANTS[name]
  spec = importlib.util.spec_from_file_location(path[:-3], os.path.join(ROOT, 'configs', path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.overrides.vision_layers = layers
  c.model.overrides.text_layers = layers
  return c
