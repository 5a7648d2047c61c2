"""A prior-art index on disk: embeddings of every drawing and caption of its sources (``sources``: ingested
data sets, plain folders of drawings, DeepPatent trees).

Layout of an index directory::

  index.json            format, embedding dtype, the model's identity, sources, finished shards
  shard-00000.npy       (rows, D) L2-normalised embeddings (float16 or float32, as index.json says)
  shard-00000.parquet   one metadata row per embedding: kind, patent_id, title, class, view, dataset,
                        split, record, image, path (the drawing: source number, part, record or file number,
                        drawing index in the record (-1 for a caption), file path inside a file source), and
                        the patent's grant_date, effective_filing_date, locarno and family_id where its
                        source gives them (``search.patents``; index.json says which, per source)

A shard covers a fixed range of records (or files) of one part of one source; it is written whole
(temporary file, then rename) before index.json lists it, so an interrupted build resumes at the first
missing shard, and adding a source only embeds that source's shards. With several processes (jax.distributed)
every process embeds its share of each batch and process 0 alone writes; the others take index.json from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import jax
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from designclip_jax.eval.embed import embed_images, embed_texts
from designclip_jax.eval.metrics import l2_normalize
from designclip_jax.paths import absolute, is_url
from designclip_jax.search import patents
from designclip_jax.search import sources as sources_lib
from designclip_jax.search.sources import META_COLUMNS, SourceError
from designclip_jax.weights import run_checkpoints

INDEX_FILE = 'index.json'
FORMAT_VERSION = 1
KINDS = ('drawing', 'caption')
DTYPES = ('float16', 'float32')
SHOWN_SKIPPED = 5  # unreadable files named in the log, per shard


class SearchError(SourceError):
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
  # {'kind', 'data_dir', 'splits', 'sheet_size', 'patent_fields', 'patent_fields_note'} (+ 'listings': part -> file
  # count and hash, for file sources); an entry without 'patent_fields' was indexed before they were: none
  datasets: list = dataclasses.field(default_factory=list)
  shards: list = dataclasses.field(default_factory=list)  # {'name', 'dataset', 'split', 'start', 'rows'}
  format: int = FORMAT_VERSION

  @classmethod
  def load(cls, index_dir: str) -> 'Manifest':
    return cls.read(index_dir)[0]

  @classmethod
  def read(cls, index_dir: str) -> tuple['Manifest', str]:
    """The manifest and the SHA-256 of the index.json bytes it was read from."""
    path = os.path.join(index_dir, INDEX_FILE)
    if not epath.Path(path).is_file():
      raise SearchError(f'{index_dir} is not a search index (no {INDEX_FILE}); build one with '
                        'python -m designclip_jax.search index')
    data = epath.Path(path).read_bytes()
    raw = json.loads(data)
    if raw.get('format') != FORMAT_VERSION:
      raise SearchError(f'{path} has index format {raw.get("format")}, this code reads format {FORMAT_VERSION}')
    return cls(**raw), hashlib.sha256(data).hexdigest()

  def save(self, index_dir: str) -> None:
    _write_atomic(os.path.join(index_dir, INDEX_FILE),
                  lambda f: f.write(json.dumps(dataclasses.asdict(self), indent=1).encode()))

  @property
  def sheet_size(self) -> int:
    return self.datasets[0]['sheet_size']

  def source(self, number: int):
    entry = self.datasets[number]
    return sources_lib.open_source(entry.get('kind', 'ingested'), entry['data_dir'], number)


def _write_atomic(path: str, write) -> None:
  """Written whole or not at all: a local file through a temporary name; a bucket object (gs://…) only appears
  once its upload is complete."""
  if is_url(path):
    with epath.Path(path).open('wb') as f:
      write(f)
    return
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    write(f)
  os.replace(tmp, path)


def _agreed_manifest(out: str, identity: dict, dtype: str, records_per_shard: int) -> 'Manifest':
  """The index's manifest as process 0 reads it (new, or as an interrupted or earlier build left it), the same
  in every process: the index directory need not be shared, only process 0 writes it."""
  manifest = None
  if jax.process_index() == 0:
    epath.Path(out).mkdir(parents=True, exist_ok=True)
    if epath.Path(out, INDEX_FILE).is_file():
      manifest = Manifest.load(out)
      check_same_model(manifest.model, identity, out)
      if manifest.dtype != dtype:
        raise SearchError(f'index {out} stores {manifest.dtype} embeddings; rerun with --dtype {manifest.dtype}')
    else:
      manifest = Manifest(dtype=dtype, model=identity, records_per_shard=records_per_shard)
    manifest.save(out)
  if jax.process_count() == 1:
    return manifest
  text = json.dumps(dataclasses.asdict(manifest)).encode() if manifest else b''
  length = int(multihost_utils.broadcast_one_to_all(np.int64(len(text))))
  data = np.frombuffer(text.ljust(length, b' '), np.uint8) if manifest else np.zeros(length, np.uint8)
  return Manifest(**json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(data))).decode()))


def _source_entry(manifest: Manifest, kind: str, location: str, requested, sheet_size: int):
  """The manifest's entry for a source (added when new), the source, and the parts to index. ``sheet_size``:
  the size file sources' drawings are preprocessed to when the index has none yet."""
  entry = next((d for d in manifest.datasets if d['data_dir'] == location and d.get('kind', 'ingested') == kind),
               None)
  source = sources_lib.open_source(kind, location, manifest.datasets.index(entry) if entry else len(manifest.datasets))
  parts = source.parts(requested)
  if entry is None:
    own = source.sheet_size(parts[0])  # an ingested set's stored size; file sources take the index's
    sheet_size = own or (manifest.sheet_size if manifest.datasets else sheet_size)
    if manifest.datasets and sheet_size != manifest.sheet_size:
      raise SearchError(f'{location} was ingested at {sheet_size} px, the index at {manifest.sheet_size} px: '
                        'query drawings could not match both; use another --out')
    entry = {'kind': kind, 'data_dir': location, 'splits': [], 'sheet_size': sheet_size, 'patent_fields': []}
    manifest.datasets.append(entry)
  order = list(dict.fromkeys(entry['splits'] + parts))
  if 'patent_fields' in entry and order != entry['splits']:
    entry['patent_fields'], entry['patent_fields_note'] = source.patent_fields(order)
  entry['splits'] = order
  return entry, source, parts


def _check_listing(entry: dict, source, part: str, done: set, number: int) -> None:
  """A file source resumes only over the listing its first shards were cut from."""
  if not hasattr(source, 'fingerprint'):
    return
  listing, known = source.fingerprint(part), entry.setdefault('listings', {}).get(part)
  if known is not None and known != listing and any(d[:2] == (number, part) for d in done):
    raise SearchError(f'{entry["data_dir"]} ({part}) changed since it was indexed ({known["files"]:,} files then, '
                      f'{listing["files"]:,} now): its shards no longer line up; index it into another --out')
  entry['listings'][part] = listing


def _embed_shard(clip, tokenizer, shard: sources_lib.Shard, *, batch_size: int, normalization: str, sheet_size: int):
  """(vectors, metadata) of a shard's rows; drawings that cannot be read are left out (logged, counted)."""
  failed = np.zeros(len(shard.drawings), bool)
  items, load = shard.drawings, shard.load
  if load is not None:
    def load(i, read=shard.load):
      try:
        return read(shard.drawings[i])
      except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for corrupt, truncated or oversized files
        if not failed[i] and failed.sum() < SHOWN_SKIPPED:
          logging.warning('search index: left out %s (%s)', shard.drawings[i], e)
        failed[i] = True
        return np.full((sheet_size, sheet_size), 255, np.uint8)  # embedded, then dropped
    items = range(len(shard.drawings))
  parts = []
  if len(items):
    parts.append(embed_images(clip, items, batch_size=batch_size, progress=False, normalization=normalization,
                              load=load))
  if shard.texts:
    parts.append(embed_texts(clip, tokenizer, shard.texts, batch_size=batch_size, progress=False))
  if jax.process_count() > 1:  # each process knows the failures among the rows it loaded
    failed = np.asarray(multihost_utils.process_allgather(failed)).any(axis=0)
  keep = np.concatenate([~failed, np.ones(len(shard.texts), bool)])
  vectors = np.concatenate(parts) if parts else np.zeros((0, clip.config.embed_dim), np.float32)
  return vectors[keep], {c: np.asarray(v, dtype=object)[keep].tolist() for c, v in shard.meta.items()}, int(failed.sum())


def build(checkpoint: str, out: str, *, data_dirs=(), folders=(), deeppatent_roots=(), splits=None,
          deeppatent_splits=None, sheet_size: int | None = None, dtype: str = 'float16', records_per_shard: int = 256,
          batch_size: int = 128, progress: bool = True) -> Manifest:
  """Embed every drawing and caption of the sources (ingested ``data_dirs``, plain ``folders`` of drawings,
  ``deeppatent_roots``) into the index at ``out``: a new index, the rest of an interrupted one, or new
  sources appended to an existing one. ``splits`` / ``deeppatent_splits``: the parts to index (default all).
  ``sheet_size``: the square size a new index's drawing files are preprocessed to (as ingestion does; default
  the model's input size); an ingested set brings its own, and an index keeps the one it has."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from designclip_jax.weights.loader import load_model  # pylint: disable=import-outside-toplevel
  if dtype not in DTYPES:
    raise SearchError(f'--dtype {dtype!r} is not one of {DTYPES}')
  requested = [('ingested', d, splits) for d in data_dirs] + [('folder', d, None) for d in folders] + \
      [('deeppatent', d, deeppatent_splits) for d in deeppatent_roots]
  if not requested:
    raise SearchError('nothing to index: give ingested data sets (--data), folders of drawings (--folder) '
                      'and/or DeepPatent trees (--deeppatent)')
  clip, tokenizer, normalization = load_model(checkpoint)
  identity = model_identity(checkpoint, clip, tokenizer, normalization)
  manifest = _agreed_manifest(out, identity, dtype, records_per_shard)
  if sheet_size is not None and manifest.datasets and sheet_size != manifest.sheet_size:
    raise SearchError(f'index {out} holds drawings at {manifest.sheet_size} px; rerun without --sheet-size, '
                      'or index into another --out')
  writer = jax.process_index() == 0
  done = {(s['dataset'], s['split'], s['start']) for s in manifest.shards}
  skipped = 0
  for kind, location, wanted in requested:
    entry, source, parts = _source_entry(manifest, kind, absolute(location), wanted,
                                         sheet_size or clip.config.vision.image_size)
    number = manifest.datasets.index(entry)
    for part in parts:
      _check_listing(entry, source, part, done, number)
      bar = tqdm(total=source.units(part), desc=f'index {os.path.basename(location)}/{part}', unit=source.kind,
                 disable=not progress or not writer)
      for start, stop, make_shard in source.shards(part, manifest.records_per_shard, entry['sheet_size']):
        if (number, part, start) not in done:
          shard = make_shard()
          vectors, meta, failed = _embed_shard(clip, tokenizer, shard, batch_size=batch_size,
                                               normalization=normalization, sheet_size=entry['sheet_size'])
          skipped += failed
          name = f'shard-{len(manifest.shards):05d}'  # every process keeps the manifest, process 0 writes
          if writer:
            write_shard(out, name, l2_normalize(vectors).astype(dtype), meta)
          manifest.shards.append({'name': name, 'dataset': number, 'split': part, 'start': start,
                                  'rows': len(vectors), 'skipped': failed})
          if writer:
            manifest.save(out)
          done.add((number, part, start))  # the same source named twice is indexed once
        bar.update(stop - start)
      bar.close()
  if writer:
    manifest.save(out)
  if skipped:
    logging.warning('search index: %d unreadable drawing(s) left out (each shard counts its own in %s)', skipped,
                    INDEX_FILE)
  return manifest


def write_shard(out: str, name: str, vectors: np.ndarray, meta: dict) -> None:
  """``meta``: column -> one value per row; dates as datetime.date or None."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  columns = {c: pa.array(v, pa.date32() if c in patents.DATE_FIELDS else None) for c, v in meta.items()}
  _write_atomic(os.path.join(out, name + '.npy'), lambda f: np.save(f, vectors))
  _write_atomic(os.path.join(out, name + '.parquet'), lambda f: pq.write_table(pa.table(columns), f))


@dataclasses.dataclass
class LoadedIndex:
  manifest: Manifest
  vectors: np.ndarray  # (N, D) in the stored dtype
  meta: dict  # column -> numpy array, one entry per row; dates datetime64[D] (NaT: not given)
  manifest_sha256: str  # of index.json's bytes as loaded: the index's identity in a search record

  def __len__(self) -> int:
    return len(self.vectors)

  def has_field(self, field: str) -> list[bool]:
    """Per source: whether it gives ``field`` (``patents.FIELDS``)."""
    return [field in d.get('patent_fields', ()) for d in self.manifest.datasets]


def _shard_columns(table, rows: int, fields) -> dict:
  """A shard's metadata as numpy columns; a column the shard lacks (an index built before it existed) or a
  patent field its source does not give is blank."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  out = {}
  for c in META_COLUMNS:
    present = c in table.column_names and (c not in patents.FIELDS or c in fields)
    if c in patents.DATE_FIELDS:
      days = table[c].cast(pa.int32()).fill_null(np.iinfo(np.int32).min).to_numpy() if present else \
          np.full(rows, np.iinfo(np.int32).min)
      out[c] = np.where(days == np.iinfo(np.int32).min, np.datetime64('NaT'), days.astype('datetime64[D]'))
    else:
      out[c] = table[c].to_numpy(zero_copy_only=False) if present else np.full(rows, patents.NONE.get(c, ''), object)
  return out


def load(index_dir: str) -> LoadedIndex:
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  manifest, manifest_sha256 = Manifest.read(index_dir)
  if not manifest.shards or not sum(s['rows'] for s in manifest.shards):
    raise SearchError(f'index {index_dir} is empty (no embedded drawings or captions yet); '
                      'run python -m designclip_jax.search index to fill it')
  def read(shard: dict, suffix: str, reader):
    with epath.Path(index_dir, shard['name'] + suffix).open('rb') as f:  # local or gs://
      return reader(f)
  vectors = np.concatenate([read(s, '.npy', np.load) for s in manifest.shards])
  shards = [_shard_columns(read(s, '.parquet', pq.read_table), s['rows'],
                           manifest.datasets[s['dataset']].get('patent_fields', ())) for s in manifest.shards]
  meta = {c: np.concatenate([shard[c] for shard in shards]) for c in META_COLUMNS}
  return LoadedIndex(manifest, vectors, meta, manifest_sha256)
