"""Evaluate a CLIP model on an ingested data set: build each task's inputs from the records, embed
them, score them with ``metrics``, and print tables."""

from __future__ import annotations

import math
import os

import numpy as np

from designclip_jax.data import pipeline
from designclip_jax.data.classes import NO_LABEL
from designclip_jax.eval import metrics
from designclip_jax.eval.embed import embed_images, embed_texts, place_on_devices

TASKS = ('zero_shot', 'image_retrieval', 'multimodal_retrieval', 'linear_probe')
DEFAULT_TEMPLATE = 'a sketch of {}'
# Flat JSON keys per task, in table order.
TABLE_KEYS = {
    'zero_shot': ('top1', 'top5', 'balanced_acc', 'head_acc', 'medium_acc', 'tail_acc'),
    'image_retrieval': ('mAP', 'rank@1', 'rank@5', 'rank@10', 'rank@20', 'rank@50', 'rank@100',
                        'precision_at_1', 'pml_map', 'map_at_r'),
    'multimodal_retrieval': ('t2i_R@1', 't2i_R@5', 't2i_R@10', 'i2t_R@1', 'i2t_R@5', 'i2t_R@10',
                             't2i_mean_rank', 't2i_median_rank', 'i2t_mean_rank', 'i2t_median_rank'),
    'linear_probe': ('probe_acc', 'probe_balanced_acc'),
}
# Counts printed under the metrics: what the scores are over.
EXTRA_KEYS = ('num_queries', 'queries_without_relevant', 'skipped_missing', 'pairs', 'pairs_seed',
              'records_without_label')


class SplitImages:
  """Drawings of a split, read on access: item k is sheet ``refs[k][1]`` of record ``refs[k][0]``. Items are
  read by several threads at once (eval.embed), mostly in order, so the last record read is kept (one record's
  sheets at a time)."""

  def __init__(self, source, refs):
    self.source, self.refs = source, list(refs)
    self._last = (None, None)

  def __len__(self):
    return len(self.refs)

  def __getitem__(self, k):
    index, sheet = self.refs[k]
    last = self._last  # one read of the shared pair: another thread may replace it meanwhile
    if last[0] != index:
      last = (index, self.source[index]['images'])
      self._last = last
    return last[1][sheet]


class SplitCaptions:
  """Captions of the given records of a split, read on access: each process reads only the captions of the
  rows it embeds."""

  def __init__(self, source, indices):
    self.source, self.indices = source, list(indices)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, k):
    caption = self.source[int(self.indices[k])]['caption']
    return caption.decode() if isinstance(caption, bytes) else caption


def split_records(data_dir: str, split: str, label: str = 'uspc') -> list[dict]:
  """Index, patent id, class under the label scheme ``label`` (NO_LABEL where the record has none) and number of
  drawings of every record of ``split``, from its record index (written at ingest): no record is read, on any
  host. Drawings and captions are read on access (SplitImages, SplitCaptions), each process its own share."""
  index = pipeline.record_index(data_dir, split)
  if not len(index):
    raise ValueError(f'split {split!r} of {data_dir} is empty')
  return [{'index': i, 'patent_id': str(p), 'label': int(c), 'num_images': int(v)}
          for i, (p, c, v) in enumerate(zip(index.patent_id, index.labels(label), index.num_views()))]


def retrieval_split(records):
  """DeepPatent-style query/gallery split of drawing sheets (front-page drawings left out: they repeat
  a sheet): each patent with ≥2 sheets gives its first sheet as a query and the rest to the gallery;
  single-sheet patents only add distractors to the gallery. Returns (record index, sheet) references
  and patent ids: query_refs, query_ids, gallery_refs, gallery_ids."""
  query_refs, query_ids, gallery_refs, gallery_ids = [], [], [], []
  for r in records:
    sheets = list(range(1, r['num_images'])) or [0]
    if len(sheets) >= 2:
      query_refs.append((r['index'], sheets[0]))
      query_ids.append(r['patent_id'])
      sheets = sheets[1:]
    for s in sheets:
      gallery_refs.append((r['index'], s))
      gallery_ids.append(r['patent_id'])
  return query_refs, np.array(query_ids), gallery_refs, np.array(gallery_ids)


def pair_subset(n: int, pairs: int | None, seed: int) -> np.ndarray:
  """Indices of a fixed, seeded subset of ``pairs`` of the ``n`` records (all of them, in order, when
  ``pairs`` is None or not smaller than ``n``)."""
  if pairs is None or pairs >= n:
    return np.arange(n)
  if pairs < 1:
    raise ValueError(f'--pairs must be at least 1, got {pairs}')
  return np.sort(np.random.default_rng(seed).choice(n, pairs, replace=False))


def class_prompt_embeddings(clip, tokenizer, class_names, templates, batch_size: int = 256, interrupt=None):
  """Mean of the normalised prompt embeddings over templates, one row per class."""
  per_template = [metrics.l2_normalize(embed_texts(clip, tokenizer, [t.format(n) for n in class_names],
                                                   batch_size=batch_size, progress=False, interrupt=interrupt))
                  for t in templates]
  return np.mean(per_template, axis=0)


def evaluate(clip, tokenizer, data_dir: str, split: str, tasks, *, batch_size: int = 128, class_counts=None,
             template: str | tuple[str, ...] = DEFAULT_TEMPLATE, progress: bool = True,
             keep_arrays: bool = False, pixel_normalization: str = 'clip', pairs: int | None = None,
             pairs_seed: int = 0, interrupt=None, label: str = 'uspc') -> dict:
  """All requested tasks on ``split``; flat metric keys (fractions; ranks 1-based). Embedding runs on every
  device of every process (call it in every process); every process gets the same scores. Multimodal
  retrieval ranks within a fixed seeded subset of ``pairs`` records when given (the paper's 5,000).
  Zero-shot (prompts name the classes of the label scheme ``label``), its head/medium/tail split (by
  ``class_counts``, default the scheme's train counts) and the linear probe score the records that scheme
  labels; ``records_without_label`` counts the split's others (Locarno: records without a Locarno code).
  With ``keep_arrays`` the per-class and per-query arrays and the retrieval split are kept too (for plots).
  ``interrupt()`` is asked before every embedding batch (see eval.embed); True stops with EmbeddingInterrupted."""
  unknown = set(tasks) - set(TASKS)
  if unknown:
    raise ValueError(f'unknown task(s) {sorted(unknown)}; choose from {TASKS}')
  table = pipeline.label_table(data_dir, label)
  class_counts = table['train_counts'] if class_counts is None else class_counts
  records = split_records(data_dir, split, label)
  source = pipeline.open_split(data_dir, split)
  out, arrays = {}, {}
  labels = np.array([r['label'] for r in records])
  labelled = labels != NO_LABEL
  if {'zero_shot', 'linear_probe'} & set(tasks):
    if not labelled.any():
      raise ValueError(f'no record of split {split!r} has a {label} class: zero_shot and linear_probe need labels')
    out['records_without_label'] = int((~labelled).sum())
  clip = place_on_devices(clip)  # once, not in every embedding call
  embed = lambda images: embed_images(clip, images, batch_size=batch_size, progress=progress,
                                      normalization=pixel_normalization, interrupt=interrupt)
  cover_emb = None
  if {'zero_shot', 'multimodal_retrieval', 'linear_probe'} & set(tasks):
    cover_emb = embed(SplitImages(source, [(r['index'], 0) for r in records]))
  if 'zero_shot' in tasks:
    templates = (template,) if isinstance(template, str) else tuple(template)
    classes = class_prompt_embeddings(clip, tokenizer, table['names'], templates, batch_size, interrupt)
    scores = metrics.zero_shot(cover_emb[labelled], labels[labelled], classes, class_counts)
    arrays['per_class_acc'], arrays['per_class_n'] = scores.pop('per_class_acc'), scores.pop('per_class_n')
    out.update(scores)
  if 'multimodal_retrieval' in tasks:
    chosen = pair_subset(len(records), pairs, pairs_seed)
    text_emb = embed_texts(clip, tokenizer, SplitCaptions(source, chosen), batch_size=batch_size,
                           progress=progress, interrupt=interrupt)
    out.update(metrics.multimodal_retrieval(cover_emb[chosen], text_emb))
    out.update(pairs=len(chosen), pairs_seed=pairs_seed)
  if 'image_retrieval' in tasks:
    qrefs, qids, grefs, gids = retrieval_split(records)
    if not qrefs:
      raise ValueError(f'no patent in split {split!r} has two drawing sheets: image retrieval needs queries')
    query_images, gallery_images = SplitImages(source, qrefs), SplitImages(source, grefs)
    q_emb, g_emb = embed(query_images), embed(gallery_images)
    scores = metrics.image_retrieval(q_emb, qids, g_emb, gids)
    arrays['per_query_ap'] = scores.pop('per_query_ap')
    arrays['retrieval'] = dict(query=q_emb, gallery=g_emb, query_images=query_images,
                               gallery_images=gallery_images, query_ids=qids, gallery_ids=gids)
    out.update(scores)
  if 'linear_probe' in tasks:
    train_labels = pipeline.record_index(data_dir, 'train').labels(label)
    train_rows = np.flatnonzero(train_labels != NO_LABEL)
    train_emb = embed(SplitImages(pipeline.open_split(data_dir, 'train'), [(int(i), 0) for i in train_rows]))
    scores = metrics.linear_probe(train_emb, train_labels[train_rows], cover_emb[labelled], labels[labelled],
                                  num_classes=len(table['codes']))
    scores.pop('probe_predictions')
    out.update(scores)
  out = defined(out)
  if keep_arrays:
    out['_arrays'] = arrays
  return out


def defined(scores: dict) -> dict:
  """NaN metrics (e.g. tail accuracy with no tail class in the split) as None: JSON null, '-' in tables."""
  return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}


def print_table(results: dict[str, dict], file=None) -> None:
  """Models side by side: one row per metric, one column per model."""
  names = list(results)
  keys = [k for task_keys in TABLE_KEYS.values() for k in task_keys
          if any(k in r for r in results.values())]
  extra = [k for k in EXTRA_KEYS if any(k in r for r in results.values())]
  width = max(12, *(len(n) for n in names))
  lines = [f'{"metric":<22}' + ''.join(f'{n:>{width + 2}}' for n in names)]
  for k in keys + extra:
    cells = []
    for n in names:
      v = results[n].get(k)
      cells.append('-' if v is None else str(v) if isinstance(v, int) else
                   f'{v:.2f}' if k.endswith(('mean_rank', 'median_rank')) else f'{v:.4f}')
    lines.append(f'{k:<22}' + ''.join(f'{c:>{width + 2}}' for c in cells))
  print('\n'.join(lines), file=file)


def print_per_class(per_class: dict[str, np.ndarray], table: dict, test_counts, file=None) -> None:
  """Zero-shot accuracy per class (rows by train frequency, most frequent first), one column per model."""
  names = list(per_class)
  order = np.argsort(-np.asarray(table['train_counts']), kind='stable')
  lines = [f'{"class":<6}{"train":>7}{"test":>6}' + ''.join(f'{n[:14]:>16}' for n in names) + '  name']
  for c in order:
    if not test_counts[c]:
      continue
    cells = ''.join(f'{per_class[n][c]:>16.3f}' for n in names)
    lines.append(f'{table["codes"][c]:<6}{table["train_counts"][c]:>7}{test_counts[c]:>6}{cells}  '
                 f'{table["names"][c][:48]}')
  print('\n'.join(lines), file=file)


def model_label(path: str) -> str:
  return os.path.basename(os.path.normpath(path)) or path
