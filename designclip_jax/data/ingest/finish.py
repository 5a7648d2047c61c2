"""What a data set gets once its shards are written: the record index, the class table, the tokenizer
and the report, all from the blocks' metadata (never from the records)."""

from __future__ import annotations

import array
import collections
import json
import os

import numpy as np
from etils import epath

from designclip_jax.data.classes import CLASS_CODES, CLASS_NAMES, LOCARNO, NO_LABEL, NUM_CLASSES, locarno_class_index
from designclip_jax.data.impact import VIEWS
from designclip_jax.data.ingest.report import Issue, count_by_action, write_report
from designclip_jax.data.ingest.splits import leakage
from designclip_jax.data.ingest.errors import IngestError
from designclip_jax.data.ingest.writer import atomic_json
from designclip_jax.data.layout import (CLASSES_FILE, RECORD_INDEX, REPORT_CSV, REPORT_JSON, SPLITS, TOKENIZER_DIR,
                                        dataset_dir_in)


def finish(out: str, image_size: int, tokenizer_vocab: int, context_length: int, blocks, about_inputs: dict) -> dict:
  """Record index, class table, report and tokenizer from the blocks' metadata (``blocks()`` yields
  them in record order); the report JSON (``about_inputs`` + counts + leakage) is written last and marks
  the data set finished."""
  ids, families, locarnos = ({s: [] for s in SPLITS} for _ in range(3))
  labels, lengths, views = ({s: array.array(code) for s in SPLITS} for code in 'hqb')  # compact at IMPACT scale
  mapping, view_counts = collections.Counter(), collections.Counter()
  issues = []
  for meta in blocks():
    issues += [Issue(*line) for line in meta['issues']]
    mapping.update(meta['mapping'])
    for split in SPLITS:
      for pid, label, record_views, _, family, locarno, _ in meta['records'][split]:
        ids[split].append(pid)
        labels[split].append(label)
        lengths[split].append(len(record_views))
        views[split].extend(record_views)
        families[split].append(family)
        locarnos[split].append(locarno)
        view_counts.update(VIEWS[v] for v in record_views)
  write_report(out, issues)
  if not any(ids.values()):
    raise IngestError(f'{os.path.join(out, REPORT_CSV)}: no row could be ingested; see the reasons there')
  by_action = count_by_action(issues)
  skipped = by_action['skipped']
  for split in SPLITS:
    if ids[split]:
      with epath.Path(out, RECORD_INDEX.format(split=split)).open('wb') as f:
        np.savez(f, patent_id=np.array(ids[split]), label=np.array(labels[split], np.int16),
                 view_offsets=np.concatenate([[0], np.cumsum(np.array(lengths[split], np.int64))]),
                 views=np.array(views[split], np.int8), family=np.array(families[split]),
                 locarno=np.array(locarnos[split]))
  train_counts = np.bincount(np.array(labels['train'], np.int64), minlength=NUM_CLASSES)
  locarno_train = np.array([locarno_class_index(code) for code in locarnos['train']], np.int64)
  locarno_counts = np.bincount(locarno_train[locarno_train != NO_LABEL], minlength=len(LOCARNO))
  with epath.Path(out, CLASSES_FILE).open('w') as f:
    json.dump({'codes': list(CLASS_CODES), 'names': list(CLASS_NAMES), 'train_counts': train_counts.tolist(),
               'views': list(VIEWS),
               # label scheme 'locarno': a record without a Locarno code is left out of its training and scoring
               'locarno': {'codes': list(LOCARNO.codes), 'names': list(LOCARNO.names),
                           'train_counts': locarno_counts.tolist(),
                           'train_without_label': int((locarno_train == NO_LABEL).sum())}}, f, indent=1)
  if tokenizer_vocab:
    from designclip_jax.data.tokenizer import train_bpe  # pylint: disable=import-outside-toplevel
    captions = (record[3] for meta in blocks() for record in meta['records']['train'])
    train_bpe(_chain(captions, [f'a sketch of {n}' for n in CLASS_NAMES]), tokenizer_vocab,
              context_length).save(os.path.join(out, TOKENIZER_DIR))
  crossing = leakage((split, record[4], record[6]) for meta in blocks() for split in SPLITS
                     for record in meta['records'][split])
  summary = about_inputs | {
      'rows_read': sum(map(len, ids.values())) + sum(skipped.values()),
      'patents_ingested': {s: len(v) for s, v in ids.items()},
      'rows_skipped': sum(skipped.values()), 'skipped_by_reason': dict(skipped),
      'rows_repaired_by_reason': dict(by_action['repaired']), 'rows_noted_by_reason': dict(by_action['noted']),
      'sheet_to_figure_mapping': dict(mapping), 'images_by_view': dict(view_counts),
      'records_without_locarno': sum(v.count('') for v in locarnos.values()), 'leakage_across_splits': crossing,
      'image_size': image_size, 'dataset_dir': dataset_dir_in(out),
  }
  atomic_json(os.path.join(out, REPORT_JSON), summary)
  return summary | {'issues': issues}


def _chain(*iterables):
  for it in iterables:
    yield from it
