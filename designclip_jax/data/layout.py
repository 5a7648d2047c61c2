"""The on-disk layout of an ingested data set: its side files, and the TFDS side (features, shard file
names, metadata).

Ingestion writes the ArrayRecord shards itself (streaming, resumable) and then describes them with
``tfds.folder_dataset.write_metadata``, so ``tfds.builder_from_directory`` / ``as_data_source`` open
the result like any TFDS data set; the Beam path (``ingest.beam``) writes the same layout through
TFDS's own Beam writer.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.data.impact import VIEWS

CLASSES_FILE = 'classes.json'
TOKENIZER_DIR = 'tokenizer'
RECORD_INDEX = 'record_index-{split}.npz'  # per record: patent id, label, view ids, family, Locarno (no images)
PATENTS_FILE = 'patents.jsonl'  # one object per grant read from XML: dates, classes, family, priority, citations
REPORT_CSV, REPORT_JSON = 'ingest_report.csv', 'ingest_report.json'  # every skipped or repaired row; the summary

DATASET_NAME = 'designclip_patents'
VERSION = '1.0.0'
SPLITS = ('train', 'validation', 'test')
FILE_FORMAT = 'array_record'
DESCRIPTION = 'DesignCLIP design patents'


@functools.cache
def features():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds.features.FeaturesDict({
      'patent_id': tfds.features.Text(),
      'title': tfds.features.Text(),
      'caption': tfds.features.Text(),
      'label': tfds.features.ClassLabel(names=list(CLASS_CODES)),
      'images': tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),  # PNG bytes
      'views': tfds.features.Sequence(tfds.features.ClassLabel(names=list(VIEWS))),
      'family': tfds.features.Text(),   # family id ('US14037863'); the patent's own id when the input gives none
      'locarno': tfds.features.Text(),  # Locarno class-subclass ('28-03'); '' when the input gives none
  })


@functools.cache
def _serializer():
  from tensorflow_datasets.core import example_serializer  # pylint: disable=import-outside-toplevel
  return example_serializer.ExampleSerializer(features().get_serialized_info())


def serialize(example: dict) -> bytes:
  """``features().serialize_example`` with the proto's map written in key order: TFDS's own call
  leaves the order of the feature map to the process (hash seed), so bytes would differ run to run."""
  return _serializer().get_tf_example(features().encode_example(example)).SerializeToString(deterministic=True)


def dataset_dir_in(out: str) -> str:
  """Where the TFDS files of a data set ingested into ``out`` live."""
  return os.path.join(out, DATASET_NAME, VERSION)


def shard_name(split: str, index: int, count: int) -> str:
  """TFDS's default shard file name, which ``write_metadata`` and ``builder_from_directory`` expect."""
  return f'{DATASET_NAME}-{split}.{FILE_FORMAT}-{index:05d}-of-{count:05d}'


def write_metadata(dataset_dir: str, shards: dict[str, list[tuple[int, int]]]) -> None:
  """dataset_info.json and features.json for shards already in ``dataset_dir``:
  ``shards[split]`` = [(records, bytes)] in shard order."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  split_infos = [tfds.core.SplitInfo(name=split, shard_lengths=[n for n, _ in shards[split]],
                                     num_bytes=sum(b for _, b in shards[split]))
                 for split in SPLITS if shards.get(split)]
  tfds.folder_dataset.write_metadata(data_dir=dataset_dir, features=features(), split_infos=split_infos,
                                     version=VERSION, check_data=False, description=DESCRIPTION)
