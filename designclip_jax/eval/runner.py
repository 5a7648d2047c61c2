"""Evaluate a CLIP model on an ingested data set: build each task's inputs from the records, embed
them, score them with ``metrics``, and print tables."""

from __future__ import annotations

import os

import numpy as np

from designclip_jax.data import pipeline
from designclip_jax.eval import metrics
from designclip_jax.eval.embed import embed_images, embed_texts

TASKS = ('zero_shot', 'image_retrieval', 'multimodal_retrieval', 'linear_probe')
DEFAULT_TEMPLATE = 'a sketch of {}'
# Flat JSON keys per task, in table order.
TABLE_KEYS = {
    'zero_shot': ('top1', 'top5', 'balanced_acc', 'head_acc', 'medium_acc', 'tail_acc'),
    'image_retrieval': ('mAP', 'rank@1', 'rank@5', 'rank@10', 'rank@20', 'rank@50', 'rank@100'),
    'multimodal_retrieval': ('t2i_R@1', 't2i_R@5', 't2i_R@10', 'i2t_R@1', 'i2t_R@5', 'i2t_R@10',
                             't2i_mean_rank', 't2i_median_rank', 'i2t_mean_rank', 'i2t_median_rank'),
    'linear_probe': ('probe_acc', 'probe_balanced_acc'),
}


def retrieval_split(records):
  """DeepPatent-style query/gallery split of drawing sheets (front-page drawings left out: they repeat
  a sheet): each patent with ≥2 sheets gives its first sheet as a query and the rest to the gallery;
  single-sheet patents only add distractors to the gallery."""
  query, query_ids, gallery, gallery_ids, query_refs, gallery_refs = [], [], [], [], [], []
  for r in records:
    sheets = list(range(1, len(r['images']))) or [0]
    if len(sheets) >= 2:
      query.append(r['images'][sheets[0]])
      query_ids.append(r['patent_id'])
      query_refs.append((r['index'], sheets[0]))
      sheets = sheets[1:]
    for s in sheets:
      gallery.append(r['images'][s])
      gallery_ids.append(r['patent_id'])
      gallery_refs.append((r['index'], s))
  return query, np.array(query_ids), gallery, np.array(gallery_ids), query_refs, gallery_refs


def class_prompt_embeddings(clip, tokenizer, class_names, templates):
  """Mean of the normalised prompt embeddings over templates, one row per class."""
  per_template = [metrics.l2_normalize(embed_texts(clip, tokenizer, [t.format(n) for n in class_names],
                                                   progress=False)) for t in templates]
  return np.mean(per_template, axis=0)


def evaluate(clip, tokenizer, data_dir: str, split: str, tasks, *, batch_size: int = 128, class_counts=None,
             template: str | tuple[str, ...] = DEFAULT_TEMPLATE, progress: bool = True,
             keep_arrays: bool = False, pixel_normalization: str = 'clip') -> dict:
  """All requested tasks on ``split``; flat metric keys (fractions; ranks 1-based). With
  ``keep_arrays`` the per-class and per-query arrays and the retrieval split are kept too (for plots)."""
  unknown = set(tasks) - set(TASKS)
  if unknown:
    raise ValueError(f'unknown task(s) {sorted(unknown)}; choose from {TASKS}')
  table = pipeline.class_table(data_dir)
  class_counts = table['train_counts'] if class_counts is None else class_counts
  records = list(pipeline.eval_records(data_dir, split))
  if not records:
    raise ValueError(f'split {split!r} of {data_dir} is empty')
  covers = [r['images'][0] for r in records]
  labels = np.array([r['label'] for r in records])
  out, arrays = {}, {}
  embed = lambda pngs: embed_images(clip, pngs, batch_size=batch_size, progress=progress,
                                    normalization=pixel_normalization)
  cover_emb = None
  if {'zero_shot', 'multimodal_retrieval', 'linear_probe'} & set(tasks):
    cover_emb = embed(covers)
  if 'zero_shot' in tasks:
    templates = (template,) if isinstance(template, str) else tuple(template)
    classes = class_prompt_embeddings(clip, tokenizer, table['names'], templates)
    scores = metrics.zero_shot(cover_emb, labels, classes, class_counts)
    arrays['per_class_acc'], arrays['per_class_n'] = scores.pop('per_class_acc'), scores.pop('per_class_n')
    out.update(scores)
  if 'multimodal_retrieval' in tasks:
    text_emb = embed_texts(clip, tokenizer, [r['caption'] for r in records], batch_size=batch_size,
                           progress=progress)
    out.update(metrics.multimodal_retrieval(cover_emb, text_emb))
  if 'image_retrieval' in tasks:
    query, qids, gallery, gids, qrefs, grefs = retrieval_split(records)
    if not query:
      raise ValueError(f'no patent in split {split!r} has two drawing sheets: image retrieval needs queries')
    q_emb, g_emb = embed(query), embed(gallery)
    scores = metrics.image_retrieval(q_emb, qids, g_emb, gids)
    arrays['per_query_ap'] = scores.pop('per_query_ap')
    arrays['retrieval'] = dict(query=q_emb, gallery=g_emb, query_refs=qrefs, gallery_refs=grefs, query_ids=qids,
                               gallery_ids=gids)
    out.update(scores)
  if 'linear_probe' in tasks:
    train = list(pipeline.eval_records(data_dir, 'train'))
    train_emb = embed([r['images'][0] for r in train])
    scores = metrics.linear_probe(train_emb, [r['label'] for r in train], cover_emb, labels,
                                  num_classes=len(table['codes']))
    scores.pop('probe_predictions')
    out.update(scores)
  if keep_arrays:
    out['_arrays'] = arrays
    out['_records'] = records
  return out


def print_table(results: dict[str, dict], file=None) -> None:
  """Models side by side: one row per metric, one column per model."""
  names = list(results)
  keys = [k for task_keys in TABLE_KEYS.values() for k in task_keys
          if any(k in r for r in results.values())]
  extra = [k for k in ('queries_without_relevant', 'num_queries') if any(k in r for r in results.values())]
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
