"""A prior-art index on disk: embeddings of every drawing and caption of ingested data sets.

Layout of an index directory::

  index.json            format, embedding dtype, the model's identity, data sets, finished shards
  shard-00000.npy       (rows, D) L2-normalised embeddings (float16 or float32, as index.json says)
  shard-00000.parquet   one metadata row per embedding: kind, patent_id, title, class, view,
                        dataset, split, record, image (the drawing reference: data set number, split,
                        record index, drawing index in the record; image -1 for a caption)

A shard covers a fixed range of records of one split of one data set; it is written whole (temporary
file, then rename) before index.json lists it, so an interrupted build resumes at the first missing
shard, and adding a data set only embeds that data set's shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os

import jax
import numpy as np
from etils import epath
from flax import nnx

from designclip_jax.data import images as image_ops
from designclip_jax.data import pipeline
from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.data.impact import VIEWS
from designclip_jax.data.layout import SPLITS
from designclip_jax.eval.embed import embed_images, embed_texts
from designclip_jax.eval.metrics import l2_normalize
from designclip_jax.weights import run_checkpoints

INDEX_FILE = 'index.json'
FORMAT_VERSION = 1
KINDS = ('drawing', 'caption')
DTYPES = ('float16', 'float32')
META_COLUMNS = ('kind', 'patent_id', 'title', 'class', 'view', 'dataset', 'split', 'record', 'image')


class SearchError(ValueError):
  """Bad input to indexing or search; the message is one line that names the file or field."""


def model_identity(source: str, clip, tokenizer, pixel_normalization: str) -> dict:
  """What makes embeddings comparable: a SHA-256 over every weight (name, shape, dtype, bytes), the
  tokenizer's vocabulary and context length and the pixel normalisation; plus the source path and,
  for a training workdir, the checkpoint step (for people; only the fingerprint is compared)."""
  h = hashlib.sha256()
  flat = sorted(nnx.to_flat_state(nnx.state(clip, nnx.Any(nnx.Param, nnx.BatchStat))), key=lambda kv: str(kv[0]))
  for path, variable in flat:
    value = np.asarray(jax.device_get(variable.get_value()))
    h.update(f'{"/".join(map(str, path))}:{value.shape}:{value.dtype}'.encode())
    h.update(np.ascontiguousarray(value).tobytes())
  h.update(json.dumps(sorted(tokenizer.hf.get_vocab().items())).encode())
  h.update(f'{tokenizer.context_length}:{pixel_normalization}'.encode())
  return {'source': str(run_checkpoints.absolute(source)), 'step': _checkpoint_step(source), 'fingerprint': h.hexdigest(),
          'pixel_normalization': pixel_normalization, 'image_size': clip.config.vision.image_size,
          'embed_dim': clip.config.embed_dim}


def _checkpoint_step(source: str):
  from designclip_jax.weights.model_spec import SPEC_FILE  # pylint: disable=import-outside-toplevel
  if not epath.Path(source, SPEC_FILE).is_file():
    return None
  mngr = run_checkpoints.manager(source, keep=None, read_only=True)
  try:
    return mngr.latest_step()
  finally:
    mngr.close()


def describe_model(identity: dict) -> str:
  step = f' step {identity["step"]}' if identity.get('step') is not None else ''
  return f'{identity["source"]}{step} (weights {identity["fingerprint"][:12]})'


def check_same_model(index_identity: dict, identity: dict, index_dir: str) -> None:
  if index_identity['fingerprint'] != identity['fingerprint']:
    raise SearchError(f'index {index_dir} was built by {describe_model(index_identity)}, but the model loaded now '
                      f'is {describe_model(identity)}: embeddings of different models are not comparable; '
                      'rebuild the index or pass the --checkpoint that built it')


@dataclasses.dataclass
class Manifest:
  dtype: str
  model: dict
  records_per_shard: int
  datasets: list = dataclasses.field(default_factory=list)  # {'data_dir', 'splits', 'sheet_size'}
  shards: list = dataclasses.field(default_factory=list)  # {'name', 'dataset', 'split', 'start', 'rows'}
  format: int = FORMAT_VERSION

  @classmethod
  def load(cls, index_dir: str) -> 'Manifest':
    path = os.path.join(index_dir, INDEX_FILE)
    if not os.path.isfile(path):
      raise SearchError(f'{index_dir} is not a search index (no {INDEX_FILE}); build one with '
                        'python -m designclip_jax.search index')
    with open(path) as f:
      raw = json.load(f)
    if raw.get('format') != FORMAT_VERSION:
      raise SearchError(f'{path} has index format {raw.get("format")}, this code reads format {FORMAT_VERSION}')
    return cls(**raw)

  def save(self, index_dir: str) -> None:
    _write_atomic(os.path.join(index_dir, INDEX_FILE),
                  lambda f: f.write(json.dumps(dataclasses.asdict(self), indent=1).encode()))

  @property
  def sheet_size(self) -> int:
    return self.datasets[0]['sheet_size']


def _write_atomic(path: str, write) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    write(f)
  os.replace(tmp, path)


def _view_name(record: dict, i: int) -> str:
  return VIEWS[record['views'][i]] if i < len(record['views']) else 'unknown'


def _shard_rows(records: list[dict], dataset: int, split: str):
  """Metadata rows (drawings first, then captions) and the inputs to embed for a group of records."""
  meta = {c: [] for c in META_COLUMNS}
  pngs, texts = [], []

  def add(kind, r, image, view):
    for c, v in zip(META_COLUMNS, (kind, r['patent_id'], r['title'], CLASS_CODES[r['label']], view, dataset,
                                   split, r['index'], image)):
      meta[c].append(v)

  for r in records:
    for i, png in enumerate(r['images']):
      add('drawing', r, i, _view_name(r, i))
      pngs.append(png)
  for r in records:
    if r['caption'].strip():
      add('caption', r, -1, '')
      texts.append(r['caption'])
  return meta, pngs, texts


def _requested_splits(data_dir: str, splits) -> list[str]:
  if splits:
    for s in splits:
      pipeline.open_split(data_dir, s)  # a clear error for a split the data set lacks
    return list(splits)
  present = []
  for s in SPLITS:
    try:
      pipeline.open_split(data_dir, s)
      present.append(s)
    except ValueError:
      continue
  if not present:
    raise SearchError(f'{data_dir} holds none of the splits {SPLITS}')
  return present


def _sheet_size(data_dir: str, split: str) -> int:
  first = next(pipeline.eval_records(data_dir, split), None)
  if first is None or not first['images']:
    raise SearchError(f'split {split!r} of {data_dir} holds no drawings to index')
  return int(image_ops.decode_png(first['images'][0]).shape[0])


def build(checkpoint: str, data_dirs, out: str, *, splits=None, dtype: str = 'float16', records_per_shard: int = 256,
          batch_size: int = 128, progress: bool = True) -> Manifest:
  """Embed every drawing and caption of ``data_dirs`` (the given splits, or all) into the index at
  ``out``: a new index, the rest of an interrupted one, or new data sets appended to an existing one."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from designclip_jax.weights.loader import load_model  # pylint: disable=import-outside-toplevel
  if dtype not in DTYPES:
    raise SearchError(f'--dtype {dtype!r} is not one of {DTYPES}')
  clip, tokenizer, normalization = load_model(checkpoint)
  identity = model_identity(checkpoint, clip, tokenizer, normalization)
  os.makedirs(out, exist_ok=True)
  if os.path.isfile(os.path.join(out, INDEX_FILE)):
    manifest = Manifest.load(out)
    check_same_model(manifest.model, identity, out)
    if manifest.dtype != dtype:
      raise SearchError(f'index {out} stores {manifest.dtype} embeddings; rerun with --dtype {manifest.dtype}')
  else:
    manifest = Manifest(dtype=dtype, model=identity, records_per_shard=records_per_shard)
  writer = jax.process_index() == 0
  if writer:
    manifest.save(out)
  done = {(s['dataset'], s['split'], s['start']) for s in manifest.shards}
  for data_dir in data_dirs:
    data_dir = os.path.abspath(data_dir)
    wanted = _requested_splits(data_dir, splits)
    entry = next((d for d in manifest.datasets if d['data_dir'] == data_dir), None)
    if entry is None:
      entry = {'data_dir': data_dir, 'splits': [], 'sheet_size': _sheet_size(data_dir, wanted[0])}
      if manifest.datasets and entry['sheet_size'] != manifest.sheet_size:
        raise SearchError(f'{data_dir} was ingested at {entry["sheet_size"]} px, the index at '
                          f'{manifest.sheet_size} px: query drawings could not match both; use another --out')
      manifest.datasets.append(entry)
    entry['splits'] = sorted(set(entry['splits']) | set(wanted), key=SPLITS.index)
    number = manifest.datasets.index(entry)
    for split in wanted:
      total = len(pipeline.open_split(data_dir, split))
      records = pipeline.eval_records(data_dir, split)
      bar = tqdm(total=total, desc=f'index {os.path.basename(data_dir)}/{split}', unit='patent', disable=not progress)
      for start in range(0, total, manifest.records_per_shard):
        group = list(itertools.islice(records, manifest.records_per_shard))
        bar.update(len(group))
        if (number, split, start) in done:
          continue
        meta, pngs, texts = _shard_rows(group, number, split)
        vectors = np.concatenate([
            embed_images(clip, pngs, batch_size=batch_size, progress=False, normalization=normalization),
            embed_texts(clip, tokenizer, texts, batch_size=batch_size, progress=False)])
        if writer:
          name = f'shard-{len(manifest.shards):05d}'
          _write_shard(out, name, l2_normalize(vectors).astype(dtype), meta)
          manifest.shards.append({'name': name, 'dataset': number, 'split': split, 'start': start,
                                  'rows': len(vectors)})
          manifest.save(out)
        done.add((number, split, start))  # the same data set named twice is indexed once
      bar.close()
  if writer:
    manifest.save(out)
  return manifest


def _write_shard(out: str, name: str, vectors: np.ndarray, meta: dict) -> None:
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  _write_atomic(os.path.join(out, name + '.npy'), lambda f: np.save(f, vectors))
  _write_atomic(os.path.join(out, name + '.parquet'), lambda f: pq.write_table(pa.table(meta), f))


@dataclasses.dataclass
class LoadedIndex:
  manifest: Manifest
  vectors: np.ndarray  # (N, D) in the stored dtype
  meta: dict  # column -> numpy array, one entry per row

  def __len__(self) -> int:
    return len(self.vectors)


def load(index_dir: str) -> LoadedIndex:
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  manifest = Manifest.load(index_dir)
  if not manifest.shards or not sum(s['rows'] for s in manifest.shards):
    raise SearchError(f'index {index_dir} is empty (no embedded drawings or captions yet); '
                      'run python -m designclip_jax.search index to fill it')
  vectors = np.concatenate([np.load(os.path.join(index_dir, s['name'] + '.npy')) for s in manifest.shards])
  table = pa.concat_tables([pq.read_table(os.path.join(index_dir, s['name'] + '.parquet'))
                            for s in manifest.shards])
  meta = {c: table[c].to_numpy(zero_copy_only=False) for c in META_COLUMNS}
  return LoadedIndex(manifest, vectors, meta)
