"""Rankings an examiner makes without a model, beside which every neural prior-art number stands (Scorers of
eval.prior_art_ranking, so they rank under the same cut-offs, families and tie rule):

- ``LocarnoByDate``: browse the classification. The query's Locarno subclass first ('28-03'), then the rest of
  its class ('28-xx'), then every other patent; within each tier the newest effective filing date first (the
  latest designs of the subclass are what a searcher reads first), equal dates by collection row. A patent
  without a Locarno code matches no one.
- ``BM25``: words. Okapi BM25 (bm25s, Lucene's variant: k1 = 1.5, b = 0.75) over each patent's title and claim,
  the query being the patent's own title and claim; lower-cased word tokens of two or more characters, English
  stop words removed, no stemming. Term statistics are those of the whole collection (later patents included: a
  searcher's index holds everything, and the words of an IDF are not prior art).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from designclip_jax.eval.prior_art_ranking import Scorer, put_replicated, put_rows

TIER = 1e6  # > any day offset of the collection: float32 holds tier * 2 + days exactly below 2**24


@jax.jit
def _by_class_and_date(query_subclass, query_class, subclass, klass, days):
  same = (subclass[None, :] == query_subclass[:, None]).astype(jnp.float32) + (klass[None, :] == query_class[:, None])
  return same * TIER + days[None, :]


class LocarnoByDate(Scorer):
  """``locarno`` (P,) codes 'CC-SS' ('' where a patent has none), ``effective`` (P,) effective filing dates."""

  def __init__(self, locarno, effective):
    locarno = np.asarray(locarno).astype(str)
    has = locarno != ''
    self.subclass = np.where(has, np.unique(locarno, return_inverse=True)[1].reshape(-1), -1)
    self.klass = np.where(has, np.unique(np.char.partition(locarno, '-')[:, 0], return_inverse=True)[1].reshape(-1), -1)
    days = np.asarray(effective, 'datetime64[D]').astype(np.int64)
    self.days = (days - days.min() + 1).astype(np.float32)
    if self.days.max() >= TIER:
      raise ValueError('effective filing dates span more than TIER days')

  def prepare(self, order, chunk):
    full = -(-len(order) // chunk) * chunk
    pad = lambda x, fill: np.concatenate([x[order], np.full(full - len(order), fill, x.dtype)])
    self.by_pos = [put_replicated(pad(x, -2)) for x in (self.subclass.astype(np.int32), self.klass.astype(np.int32))]
    self.by_pos.append(put_replicated(pad(self.days, 0)))

  def scores(self, rows, width):
    no_match = lambda x: np.where(x[rows] >= 0, x[rows], -3).astype(np.int32)  # '' matches nothing
    return _by_class_and_date(put_rows(no_match(self.subclass)), put_rows(no_match(self.klass)),
                              *(x[:width] for x in self.by_pos))


class BM25(Scorer):
  """``texts`` (P,): each patent's title and claim."""

  def __init__(self, texts):
    try:
      import bm25s  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise ValueError("the BM25 baseline needs bm25s: pip install -e '.[prior_art]'") from None
    tokens = bm25s.tokenize(list(texts), stopwords='en', show_progress=False)
    self.index = bm25s.BM25(k1=1.5, b=0.75, method='lucene')
    self.index.index(tokens, show_progress=False)
    words = {i: w for w, i in tokens.vocab.items()}
    self.query_words = [[words[i] for i in ids] for ids in tokens.ids]

  def prepare(self, order, chunk):
    self.order = order

  def scores(self, rows, width):
    block = np.zeros((len(rows), width), np.float32)
    for b, row in enumerate(rows):
      if self.query_words[row]:  # a patent without words scores 0 against all
        block[b, :min(width, len(self.order))] = self.index.get_scores(self.query_words[row])[self.order[:width]]
    return put_rows(block)
