"""The streaming ingestion's stages as an Apache Beam pipeline, through TFDS's Beam support.

    python -m designclip_jax.data.ingest --csv 'impact/*.csv' --images impact/ --out DATA_DIR \
        --beam-runner DirectRunner --beam-options='--direct_num_workers=4 --direct_running_mode=multi_processing'

(``pip install '.[beam]'``; on Dataflow / Flink / Spark pass that runner and its options, with paths
every worker can read.) The same row parsing, duplicate rule, drawing preprocessing and report as the
streaming path: CSV files are read in parallel, repeated ids are resolved by a group-by-id that keeps
the first row (CSV order), drawings are decoded by a DoFn that opens the image source once per
worker, and TFDS's Beam writer writes the shards. Records are keyed by CSV position and written with
shuffling disabled, so each split holds the streaming path's records in the same order (the shard
boundaries may differ). Per-row metadata and report lines (no drawings) are grouped by block of
``rows_per_shard`` rows of a CSV and written as one block file each, in the streaming path's block
format, so the driver reads them one at a time into the same record index, class table and report
(it never holds every row's metadata). TFDS's Beam writer refuses an empty split, so
every split must receive a record (any real input does; the streaming path has no such limit).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import shlex
import shutil

from designclip_jax.data.ingest.csv_rows import check_inputs, duplicate_issue, parse_csv
from designclip_jax.data.ingest.drawings import load_patent
from designclip_jax.data.ingest.finish import finish
from designclip_jax.data.ingest.errors import IngestError
from designclip_jax.data.ingest.rows import RowItem, RowResult
from designclip_jax.data.ingest.sources import ImageSource, images_location
from designclip_jax.data.ingest.splits import ID_RULE, LIST_RULE, read_split_lists
from designclip_jax.data.ingest.writer import (BEAM_WORK_DIR, ROWS_PER_SHARD, atomic_json, block_meta, prepare_output,
                                               read_json)
from designclip_jax.data.layout import DATASET_NAME, DESCRIPTION, SPLITS, VERSION, dataset_dir_in, features
from designclip_jax.paths import absolute, is_url


def _parse_file(indexed_path, images, split_lists):
  csv_index, path = indexed_path
  return parse_csv(path, csv_index, images_location(images, path), split_lists)


def _group_key(item: RowItem) -> str:
  """Accepted rows meet their duplicates by id; rejected rows pass through on their own."""
  return item.patent_id if item.patent is not None else f'\0{item.key}'


def _keep_first(group):
  """A repeated id keeps its first row in CSV order; the others are skipped as duplicates."""
  _, items = group
  items = sorted(items, key=lambda x: x.key)
  for item in items[1:]:
    item.issues, item.patent = [duplicate_issue(items[0].source, items[0].row)], None
  return items


class _LoadPatents:
  """DoFn body: each image source (a yearly zip or a folder) opened once per DoFn instance and kept open
  until teardown: after GroupById rows of different years interleave, so closing on every switch would
  reopen multi-GB zips; and a DoFn instance serves one thread at a time, unlike a module-level cache."""

  def __init__(self, image_size: int):
    self.image_size = image_size
    self.sources: dict[str, ImageSource] = {}

  def setup(self):
    self.sources = {}

  def process(self, item: RowItem):
    if item.images not in self.sources:
      self.sources[item.images] = ImageSource(item.images)
    yield load_patent(item, self.sources[item.images], self.image_size)

  def teardown(self):
    for source in self.sources.values():
      source.close()
    self.sources = {}


def _side_block(result: RowResult, rows_per_shard: int) -> tuple[str, RowResult]:
  """A row's metadata and report lines without the drawings, keyed by its block: CSV index, row block."""
  example = None if result.example is None else {k: v for k, v in result.example.items() if k != 'images'}
  block = f'{result.key >> 32:05d}-{(result.key & 0xFFFFFFFF) // rows_per_shard:06d}'
  return block, dataclasses.replace(result, serialized=None, example=example)


def _write_block_file(group, work: str) -> None:
  """One block's metadata, rows in key order, written whole (a retried bundle rewrites the same bytes)."""
  block, results = group
  atomic_json(os.path.join(work, f'side-{block}.json'), block_meta(sorted(results, key=lambda r: r.key)))


def _build(pipeline, csv_paths: list[str], images: str, image_size: int, rows_per_shard: int, work: str,
           split_lists: dict[str, str] | None) -> dict:
  import apache_beam as beam  # pylint: disable=import-outside-toplevel

  class LoadPatents(_LoadPatents, beam.DoFn):
    pass

  results = (pipeline
             | 'CsvFiles' >> beam.Create(list(enumerate(csv_paths)))
             | 'ParseRows' >> beam.FlatMap(_parse_file, images=images, split_lists=split_lists)
             | 'ById' >> beam.Map(lambda item: (_group_key(item), item))
             | 'GroupById' >> beam.GroupByKey()
             | 'KeepFirst' >> beam.FlatMap(_keep_first)
             | 'LoadDrawings' >> beam.ParDo(LoadPatents(image_size)))
  _ = (results
       | 'ByBlock' >> beam.Map(_side_block, rows_per_shard=rows_per_shard)
       | 'GroupByBlock' >> beam.GroupByKey()
       | 'WriteBlockFiles' >> beam.Map(_write_block_file, work=work))
  return {split: (results
                  | f'Select_{split}' >> beam.Filter(lambda r, s=split: r.split == s)
                  | f'Example_{split}' >> beam.Map(lambda r: (r.key, r.example)))
          for split in SPLITS}


@functools.cache  # TFDS registers builder classes by name: define it once per process
def builder_class():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  class DesignclipPatents(tfds.core.GeneratorBasedBuilder):
    """Design patents built by a Beam pipeline; ``ingest_args`` is set by ``ingest_beam``."""
    VERSION = tfds.core.Version(VERSION)
    ingest_args: dict = {}

    def _info(self):
      # shuffling off: records sorted by key (CSV position), the streaming path's order
      return self.dataset_info_from_configs(features=features(), description=DESCRIPTION, disable_shuffling=True)

    def _split_generators(self, dl_manager, pipeline):
      del dl_manager
      return _build(pipeline, **self.ingest_args)

    def _generate_examples(self):
      raise NotImplementedError('examples come from the pipeline built in _split_generators')

  DesignclipPatents.name = DATASET_NAME
  return DesignclipPatents


def ingest_beam(csv_pattern: str, images: str, out: str, *, beam_runner: str = 'DirectRunner',
                beam_options: str = '', image_size: int = 256, tokenizer_vocab: int = 0,
                context_length: int = 77, rows_per_shard: int = ROWS_PER_SHARD,
                split_files: dict[str, str] | None = None, overwrite: bool = False) -> dict:
  """``ingest`` on Beam: the same records per split, the same report; returns the summary."""
  try:
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise IngestError("apache_beam: not installed; pip install 'designclip_jax[beam]'") from None
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if is_url(out):  # TFDS's Beam writer hands the path to ArrayRecord's writer, which writes local files only
    raise IngestError(f'{out}: --beam-runner writes a local --out only (the inputs may be in a bucket); ingest '
                      'without --beam-runner to write into the bucket')
  csv_paths = check_inputs(csv_pattern, images)
  split_lists = read_split_lists(split_files) if split_files else None
  settings = {'runner': 'beam', 'csv_files': [absolute(p) for p in csv_paths], 'images': absolute(images),
              'image_size': image_size}
  # a Beam run is not resumed block by block (the engine retries failed work itself): start clean
  work = prepare_output(out, settings, overwrite, work_name=BEAM_WORK_DIR)
  shutil.rmtree(os.path.dirname(dataset_dir_in(out)), ignore_errors=True)
  for old in glob.glob(os.path.join(work, 'side-*')):
    os.remove(old)
  builder_cls = builder_class()
  builder_cls.ingest_args = dict(csv_paths=[absolute(p) for p in csv_paths], images=absolute(images),
                                 image_size=image_size, rows_per_shard=rows_per_shard, work=os.path.abspath(work),
                                 split_lists=split_lists)
  tfds.disable_progress_bar()
  builder = builder_cls(data_dir=out, file_format='array_record')
  options = beam.options.pipeline_options.PipelineOptions(shlex.split(beam_options))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_runner=beam_runner,
                                                                             beam_options=options))
  blocks = lambda: (read_json(path) for path in sorted(glob.glob(os.path.join(work, 'side-*.json'))))
  about = {'csv_files': csv_paths, 'split_rule': LIST_RULE if split_lists else ID_RULE}
  summary = finish(out, image_size, tokenizer_vocab, context_length, blocks, about)
  shutil.rmtree(work, ignore_errors=True)
  return summary
