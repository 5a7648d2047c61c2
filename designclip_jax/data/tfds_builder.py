"""The TFDS GeneratorBasedBuilder behind ``ingest`` (kept in its own module: TFDS locates a builder by
its module's package, which fails for a class defined in a ``python -m`` entry point)."""

from __future__ import annotations

import functools

import numpy as np

from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.data.impact import VIEWS

DATASET_NAME = 'designclip_patents'
SPLITS = ('train', 'validation', 'test')


@functools.cache  # TFDS registers builder classes by name: define it once per process
def builder_class():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  class DesignclipPatents(tfds.core.GeneratorBasedBuilder):
    """Design patents: images with views, caption, class. Examples come from ``self.examples``."""
    VERSION = tfds.core.Version('1.0.0')
    examples: dict[str, list] = {}

    def _info(self):
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
          'patent_id': tfds.features.Text(),
          'title': tfds.features.Text(),
          'caption': tfds.features.Text(),
          'label': tfds.features.ClassLabel(names=list(CLASS_CODES)),
          'images': tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),  # PNG bytes
          'views': tfds.features.Sequence(tfds.features.ClassLabel(names=list(VIEWS))),
      }), description='DesignCLIP design patents')

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(split) for split in SPLITS if self.examples.get(split)}

    def _generate_examples(self, split):
      yield from self.examples[split]

  DesignclipPatents.name = DATASET_NAME
  return DesignclipPatents


