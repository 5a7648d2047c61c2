"""Grain input pipelines over an ingested data set.

Training is epoch-free: global example k is drawn from its own seeded RNG (record chosen with
probability ∝ f_c^-β, then a view pair and augmentation), so the stream is deterministic, random
access and the same whatever the number of processes or workers. Each process materialises only
its slice of every global batch; a run resumes from its step alone (no iterator state), so hosts and
workers may change between runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import signal

import numpy as np
from etils import epath
from PIL import Image

from designclip_jax.data import images as image_ops
from designclip_jax.data.classes import NO_LABEL, label_scheme, locarno_class_index
from designclip_jax.data.impact import VIEWS
from designclip_jax.data.layout import CLASSES_FILE, DATASET_NAME, RECORD_INDEX, TOKENIZER_DIR

PAIR_STRATEGIES = ('cover', 'random', 'front')
_ANCHOR_VIEWS = (VIEWS.index('front'), VIEWS.index('perspective'))


def dataset_dir(data_dir: str) -> str:
  """The versioned TFDS directory inside an ingested data directory (local or gs://)."""
  root = os.path.join(data_dir, DATASET_NAME)
  versions = sorted(p.name for p in epath.Path(root).iterdir()) if epath.Path(root).is_dir() else []
  if not versions:
    raise FileNotFoundError(f'{data_dir!r} holds no ingested data set (expected {root}/<version>/); '
                            'run python -m designclip_jax.data.ingest first')
  return os.path.join(root, versions[-1])


def open_split(data_dir: str, split: str):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder = tfds.builder_from_directory(dataset_dir(data_dir))
  if split not in builder.info.splits:
    raise ValueError(f'split {split!r} not in {data_dir}; it has {sorted(builder.info.splits)}')
  return builder.as_data_source(split)


def class_table(data_dir: str) -> dict:
  path = epath.Path(data_dir, CLASSES_FILE)
  if not path.exists():
    raise FileNotFoundError(f'{data_dir!r} is not a complete ingested data set (no {CLASSES_FILE}); '
                            'run python -m designclip_jax.data.ingest first')
  return json.loads(path.read_text())


def label_table(data_dir: str, scheme: str) -> dict:
  """``codes``, ``names`` and ``train_counts`` of a label scheme ('uspc' | 'locarno') in the data set's class
  table (classes.json: USPC at the top, as every data set has it; Locarno under 'locarno')."""
  label_scheme(scheme)  # a clear error for an unknown name
  table = class_table(data_dir)
  if scheme == 'uspc':
    return {k: table[k] for k in ('codes', 'names', 'train_counts')}
  if scheme not in table:
    raise FileNotFoundError(f'{epath.Path(data_dir, CLASSES_FILE)} has no {scheme} table: {data_dir!r} was ingested by '
                            'an older version; run python -m designclip_jax.data.ingest --overwrite again (the '
                            'embedded synthetic set: delete that folder and it is rebuilt)')
  return table[scheme]


def tokenizer_dir(data_dir: str) -> str:
  return os.path.join(data_dir, TOKENIZER_DIR)


def class_weights(train_counts, beta: float) -> np.ndarray:
  """1 / f_c^β per class (f_c = class share of the train split); classes absent from train get 0."""
  counts = np.asarray(train_counts, np.float64)
  freq = counts / counts.sum()
  with np.errstate(divide='ignore'):
    return np.where(counts > 0, freq ** -beta, 0.0)


def label_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Records per class; records without a label (NO_LABEL) are not counted."""
  return np.bincount(labels[labels != NO_LABEL], minlength=num_classes)


def sampling_cdf(labels: np.ndarray, num_classes: int, beta: float) -> np.ndarray:
  """Cumulative draw probabilities over records: P(record i) ∝ f_{c(i)}^-β, so class c's share of
  draws is ∝ n_c^(1-β) (β=0 natural, β=1 balanced, β>1 tail-favoured). A record without a label is never
  drawn (probability 0; the CDF is exactly 1 from the last labelled record on)."""
  labelled = labels != NO_LABEL
  if not labelled.any():
    raise ValueError('no training record has a label of this scheme: nothing to sample')
  p = np.where(labelled, class_weights(label_counts(labels, num_classes), beta)[np.where(labelled, labels, 0)], 0.0)
  cdf = np.cumsum(p / p.sum())
  cdf[np.flatnonzero(labelled)[-1]:] = 1.0  # a draw past a rounded-down total still lands on a labelled record
  return cdf


def draw_record(cdf: np.ndarray, rng: np.random.Generator) -> int:
  return min(int(np.searchsorted(cdf, rng.random(), side='right')), len(cdf) - 1)


@dataclasses.dataclass(frozen=True)
class RecordIndex:
  """Per-record metadata of a split, in record order, written at ingest: the sampler and the loss
  weights read this instead of the records (start-up does not grow with image bytes)."""
  patent_id: np.ndarray     # (n,) str
  label: np.ndarray         # (n,) int
  view_offsets: np.ndarray  # (n + 1,): record i's view ids are views[view_offsets[i]:view_offsets[i + 1]]
  views: np.ndarray         # (total images,) int, indices into VIEWS
  family: np.ndarray        # (n,) str: family id (the patent's own id when the input gave no family)
  locarno: np.ndarray       # (n,) str: Locarno class-subclass ('28-03'); '' when the input gave none

  def __len__(self) -> int:
    return len(self.label)

  def labels(self, scheme: str) -> np.ndarray:
    """(n,) int class indices under a label scheme ('uspc' | 'locarno'); NO_LABEL where the record has none."""
    label_scheme(scheme)
    if scheme == 'uspc':
      return self.label
    return np.array([locarno_class_index(str(code)) for code in self.locarno], np.int64)

  def family_index(self) -> np.ndarray:
    """(n,) int32: records of one family share a number (numbered by family id in sorted order)."""
    return np.unique(self.family, return_inverse=True)[1].reshape(-1).astype(np.int32)

  def num_views(self) -> np.ndarray:
    return np.diff(self.view_offsets)

  def view_ids(self, i: int) -> np.ndarray:
    return self.views[self.view_offsets[i]:self.view_offsets[i + 1]]


def record_index(data_dir: str, split: str) -> RecordIndex:
  path = epath.Path(data_dir, RECORD_INDEX.format(split=split))
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: {data_dir!r} was ingested by an older version or has no split '
                            f'{split!r}; run python -m designclip_jax.data.ingest --overwrite again')
  with path.open('rb') as f, np.load(f) as z:
    if 'family' not in z:
      raise FileNotFoundError(f'{path} has no family ids: {data_dir!r} was ingested by an older version; '
                              'run python -m designclip_jax.data.ingest --overwrite again')
    return RecordIndex(z['patent_id'], z['label'].astype(np.int64), z['view_offsets'], z['views'].astype(np.int64),
                       z['family'], z['locarno'])


def batch_shapes(global_batch: int, image_size: int, context_length: int) -> dict:
  """Shape and dtype of every field of a training batch, as ``TrainTransform`` makes them: the one
  description the ahead-of-time compile and the benchmarks build their batches from. Drawings travel as
  uint8 with one grey channel (a quarter of float32's bytes per channel, a twelfth of float32 RGB) between
  Grain workers and to the devices; the train step normalises them (``data.images.normalize``). ``label`` and
  ``weight`` follow the run's label scheme; ``record`` and ``family`` number the drawn record and its family
  (the contrastive losses mask one or the other)."""
  n = global_batch
  return {'image': ((n, image_size, image_size, 1), np.uint8), 'view': ((n, image_size, image_size, 1), np.uint8),
          'tokens': ((n, context_length), np.int32), 'label': ((n,), np.int32), 'weight': ((n,), np.float32),
          'record': ((n,), np.int32), 'family': ((n,), np.int32), 'view_ids': ((n, 2), np.int32)}


@dataclasses.dataclass(frozen=True)
class TrainOptions:
  image_size: int
  global_batch: int
  seed: int = 0
  beta_sample: float = 1.2
  beta_loss: float = 1.2
  pair_strategy: str = 'cover'
  label: str = 'uspc'  # the label scheme: classes.LABEL_SCHEMES
  augment: bool = True
  process_index: int = 0
  process_count: int = 1
  worker_count: int = 0
  read_threads: int = 32  # examples of a batch made at once per process: bucket reads wait 20-100 ms each

  def __post_init__(self):
    label_scheme(self.label)
    if self.pair_strategy not in PAIR_STRATEGIES:
      raise ValueError(f'pair_strategy {self.pair_strategy!r} is not one of {PAIR_STRATEGIES}')
    if self.global_batch % self.process_count:
      raise ValueError(f'global batch {self.global_batch} does not split over {self.process_count} processes')


def _augment(gray: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Random resized crop (scale 0.8–1, aspect kept) and a small translation; white fill."""
  h, w = gray.shape
  scale = rng.uniform(0.8, 1.0)
  ch, cw = int(h * scale), int(w * scale)
  y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
  crop = Image.fromarray(gray[y:y + ch, x:x + cw]).resize((size, size), Image.Resampling.BOX)
  return np.asarray(crop)


class TrainTransform:
  """Global example index -> one training example (picklable, so it can run in Grain workers)."""

  def __init__(self, data_dir: str, opts: TrainOptions, tokenizer):
    self.data_dir, self.opts, self.tokenizer = data_dir, opts, tokenizer
    self.source = open_split(data_dir, 'train')
    index = record_index(data_dir, 'train')
    self.labels = index.labels(opts.label)  # records without a label of the scheme are never drawn
    self.family = index.family_index()
    num_classes = len(label_scheme(opts.label))
    self.loss_weights = class_weights(label_counts(self.labels, num_classes), opts.beta_loss).astype(np.float32)
    self.cdf = sampling_cdf(self.labels, num_classes, opts.beta_sample)
    self.local_batch = opts.global_batch // opts.process_count

  def global_index(self, local_index: int) -> int:
    step, j = divmod(local_index, self.local_batch)
    return step * self.opts.global_batch + self.opts.process_index * self.local_batch + j

  def __call__(self, local_index: int) -> dict:
    k = self.global_index(int(local_index))
    rng = np.random.default_rng([self.opts.seed, k])
    record_index = draw_record(self.cdf, rng)
    record = self.source[record_index]
    first, second = self._pair(np.asarray(record['views']), rng)
    size = self.opts.image_size

    def pixels(i):
      gray = image_ops.decode_png(record['images'][i])
      gray = _augment(gray, size, rng) if self.opts.augment else gray
      return image_ops.fit(gray, size)

    caption = record['caption']
    caption = caption.decode() if isinstance(caption, bytes) else caption
    label = int(self.labels[record_index])
    return {
        'image': pixels(first), 'view': pixels(second),
        'tokens': self.tokenizer([caption])[0],
        'label': np.int32(label), 'weight': self.loss_weights[label],
        'record': np.int32(record_index), 'family': self.family[record_index], 'view_ids': np.array([record['views'][first], record['views'][second]],
                                                                np.int32),
    }

  def _pair(self, views: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Indices of (caption image, second view): two different images whenever the patent has two."""
    n = len(views)
    if n == 1:
      return 0, 0  # augmentation still makes the two crops differ
    strategy = self.opts.pair_strategy
    if strategy == 'random':
      a, b = rng.choice(n, 2, replace=False)
      return int(a), int(b)
    if strategy == 'front':
      anchors = [i for i in range(1, n) if views[i] in _ANCHOR_VIEWS]
      first = anchors[0] if anchors else 0
    else:
      first = 0  # the front-page drawing, from which IMPACT's captions were generated
    others = [i for i in range(n) if i != first]
    return first, int(others[int(rng.integers(len(others)))])


def train_dataset(data_dir: str, opts: TrainOptions, tokenizer, *, start_step: int = 0, num_steps: int = 2 ** 40):
  """An IterDataset of host-local batches (dicts of numpy arrays with leading dim global_batch / processes)."""
  return batched(TrainTransform(data_dir, opts, tokenizer), opts, start_step=start_step, num_steps=num_steps)


def batched(transform, opts: TrainOptions, *, start_step: int = 0, num_steps: int = 2 ** 40):
  """Host-local batches of ``transform(local example index)``, run in ``opts.worker_count`` Grain processes (it
  must pickle): the training stream, or a variant of it that a benchmark measures the same way."""
  import grain  # pylint: disable=import-outside-toplevel
  local = opts.global_batch // opts.process_count
  ds = grain.MapDataset.range(start_step, num_steps).map(BatchOfStep(transform, local, opts.read_threads))
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0 if opts.worker_count else 2, prefetch_buffer_size=2))
  if opts.worker_count:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=opts.worker_count),
                              worker_init_fn=_leave_sigterm_to_the_main_process)
  return it_ds


class BatchOfStep:
  """Step -> this host's batch of that step: ``transform`` of its examples made by ``threads`` threads, stacked in
  order. A record read from a bucket waits 20-100 ms for its first byte (bench/gcs_read_rate.py), and PNG decoding
  and resizing release the GIL: one example at a time would leave a process reading from a bucket idle on latency.
  A batch's contents never depend on the thread or worker counts."""

  def __init__(self, transform, local_batch: int, threads: int):
    self.transform, self.local_batch, self.threads = transform, local_batch, max(1, threads)
    self._pool = None  # made in the process that runs it (a Grain worker gets this object pickled)

  def __getstate__(self):
    return {**self.__dict__, '_pool': None}

  def __call__(self, step: int) -> dict:
    if self._pool is None:
      self._pool = concurrent.futures.ThreadPoolExecutor(min(self.threads, self.local_batch),
                                                         thread_name_prefix='read')
    first = int(step) * self.local_batch
    examples = list(self._pool.map(self.transform, range(first, first + self.local_batch)))
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def _leave_sigterm_to_the_main_process(worker_index: int, worker_count: int) -> None:
  """srun and pod hosts signal every process: a worker killed by SIGTERM would crash the train loop before its
  preemption checkpoint. The main process saves, then closes its workers (Grain stops them itself)."""
  del worker_index, worker_count
  signal.signal(signal.SIGTERM, signal.SIG_IGN)


def eval_records(data_dir: str, split: str):
  """Every record of ``split`` as a dict of python values (images stay PNG bytes)."""
  source = open_split(data_dir, split)
  for i in range(len(source)):
    r = source[i]
    decode = lambda s: s.decode() if isinstance(s, bytes) else s
    yield {'index': i, 'patent_id': decode(r['patent_id']), 'title': decode(r['title']),
           'caption': decode(r['caption']), 'label': int(r['label']), 'images': list(r['images']),
           'views': [int(v) for v in r['views']]}


EVAL_READ_THREADS = 16


def map_in_threads(fn, items, threads: int = EVAL_READ_THREADS) -> list:
  """``[fn(x) for x in items]``, in order, run by Grain's read threads as the train pipeline's reads are: record
  reads (waiting on storage, a bucket's latency included) and PNG decoding (zlib and PIL release the GIL)
  overlap. For the host-side work of the eval embedding, one batch of this host's rows at a time."""
  import grain  # pylint: disable=import-outside-toplevel
  items = list(items)
  if len(items) < 2:
    return [fn(x) for x in items]
  dataset = grain.MapDataset.source(items).map(fn)
  return list(dataset.to_iter_dataset(grain.ReadOptions(num_threads=min(threads, len(items)),
                                                        prefetch_buffer_size=len(items))))
