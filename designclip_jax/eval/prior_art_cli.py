"""The prior-art task of the eval CLI: an ingested Red Book data set (records + patents.jsonl), a model or saved
embeddings -> the benchmark of eval.prior_art for every way of scoring a patent against another, beside the
baselines of eval.prior_art_baselines.

    python -m designclip_jax.eval --checkpoint C --data D --task prior_art [--citations examiner|all] \\
        [--split test] [--save-embeddings E.npz] --output J.json
    python -m designclip_jax.eval --embeddings E.npz --data D --task prior_art --output J.json   # rescore E.npz

The collection is every ingested patent of every split; the queries are the patents of ``--split`` (``all``: every
patent) with at least one relevant design. A patent's drawings are its sheets (the front-page drawing, a repeat of
one sheet, only where it has no other). Ways of scoring, each a cosine of unit vectors unless said:

- ``drawings_mean``: the mean of the unit vectors of its drawings (renormalised);
- ``drawings_best_pair``: the best pair: the largest cosine between a drawing of one and a drawing of the other;
- ``caption``: its caption's text embedding;
- ``drawings_caption``: the mean of the drawings_mean and caption cosines (the two unit vectors side by side);
- ``locarno_by_date`` and ``bm25_title_claim``: the examiner's baselines (no model).
"""

from __future__ import annotations

import json
import os

import numpy as np

from designclip_jax.eval import prior_art, prior_art_baselines, prior_art_ranking
from designclip_jax.eval.metrics import l2_normalize

CITATIONS = {'examiner': ('cited_by_examiner',), 'all': ('cited_by_examiner', 'cited_by_applicant')}
MODEL_METHODS = ('drawings_mean', 'drawings_best_pair', 'caption', 'drawings_caption')
BASELINES = ('locarno_by_date', 'bm25_title_claim')
SAVED = ('patent_ids', 'view_embeddings', 'view_offsets', 'caption_embeddings')


def load_collection(data_dir: str) -> dict:
  """Every record of every split (split order, record order) joined with its patents.jsonl fields. Patents without
  a filing date cannot have a cut-off: left out and counted."""
  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from designclip_jax.data.layout import PATENTS_FILE, SPLITS  # pylint: disable=import-outside-toplevel
  path = os.path.join(data_dir, PATENTS_FILE)
  if not os.path.isfile(path):
    raise ValueError(f'{path} not found: the prior_art task needs the grant XML fields that ingest --redbook writes')
  with open(path) as f:
    fields = {p['id']: p for p in map(json.loads, f)}
  rows = []
  for split in SPLITS:
    try:
      index = pipeline.record_index(data_dir, split)
    except FileNotFoundError:
      continue
    for i, (pid, views) in enumerate(zip(index.patent_id.tolist(), index.num_views().tolist())):
      if pid not in fields:
        raise ValueError(f'{path} has no line for patent {pid} ({split} record {i}): ingest it again with --redbook')
      rows.append((split, i, pid, views))
  kept = [r for r in rows if fields[r[2]]['filing_date']]
  date = lambda text: np.datetime64(text or 'NaT', 'D')
  patents = [fields[r[2]] for r in kept]
  return {
      'split': np.array([r[0] for r in kept]), 'record': np.array([r[1] for r in kept]),
      'ids': np.array([r[2] for r in kept]), 'num_views': np.array([r[3] for r in kept]),
      'filing': np.array([date(p['filing_date']) for p in patents], 'datetime64[D]'),
      'grant': np.array([date(p['grant_date']) for p in patents], 'datetime64[D]'),
      'priority': np.array([min((date(c['date']) for c in p['priority'] if c['date']), default=date(''))
                            for p in patents], 'datetime64[D]'),
      'family': np.array([p['family_id'] or p['id'] for p in patents]),
      'locarno': np.array([p['locarno'] for p in patents]),
      'text': [f"{p['title']}. {p.get('claim', '')}" for p in patents],
      'cited': {name: [p[name] for p in patents] for name in ('cited_by_examiner', 'cited_by_applicant')},
      'without_filing_date': len(rows) - len(kept),
      'without_claim': sum(not p.get('claim') for p in patents),  # patents.jsonl of an ingest before claims were kept
  }


def embed_collection(clip, tokenizer, data_dir: str, collection: dict, *, batch_size: int, normalization: str) -> dict:
  """Unit vectors of every drawing (view_embeddings, view_offsets) and caption of the collection's patents."""
  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from designclip_jax.eval.embed import embed_images, embed_texts, place_on_devices  # pylint: disable=import-outside-toplevel
  from designclip_jax.eval.runner import SplitCaptions, SplitImages  # pylint: disable=import-outside-toplevel
  clip = place_on_devices(clip)
  views, captions = [], []
  for split in dict.fromkeys(collection['split'].tolist()):
    mine = collection['split'] == split
    source = pipeline.open_split(data_dir, split)
    refs = [(int(r), s) for r, n in zip(collection['record'][mine], collection['num_views'][mine])
            for s in (range(1, n) if n > 1 else [0])]
    views.append(embed_images(clip, SplitImages(source, refs), batch_size=batch_size, normalization=normalization))
    captions.append(embed_texts(clip, tokenizer, SplitCaptions(source, collection['record'][mine]),
                                batch_size=batch_size))
  per_patent = np.maximum(collection['num_views'] - 1, 1)
  return {'patent_ids': collection['ids'], 'view_embeddings': l2_normalize(np.concatenate(views)),
          'view_offsets': np.concatenate([[0], np.cumsum(per_patent)]),
          'caption_embeddings': l2_normalize(np.concatenate(captions))}


def patent_vectors(embeddings: dict) -> dict[str, np.ndarray]:
  """The vectors each single-vector method ranks (unit rows)."""
  views, offsets = embeddings['view_embeddings'], embeddings['view_offsets']
  mean = l2_normalize(np.add.reduceat(l2_normalize(views), offsets[:-1]) / np.diff(offsets)[:, None])
  caption = l2_normalize(embeddings['caption_embeddings'])
  return {'drawings_mean': mean, 'caption': caption,
          'drawings_caption': np.concatenate([mean, caption], axis=1) / np.sqrt(2.0)}


def scorers(collection: dict, embeddings: dict | None, effective) -> dict:
  out = {}
  if embeddings is not None:
    vectors = patent_vectors(embeddings)
    out = {'drawings_mean': prior_art_ranking.Cosine(vectors['drawings_mean']),
           'drawings_best_pair': prior_art_ranking.BestViewPair(embeddings['view_embeddings'],
                                                                embeddings['view_offsets']),
           'caption': prior_art_ranking.Cosine(vectors['caption']),
           'drawings_caption': prior_art_ranking.Cosine(vectors['drawings_caption'])}
  out['locarno_by_date'] = prior_art_baselines.LocarnoByDate(collection['locarno'], effective)
  out['bm25_title_claim'] = prior_art_baselines.BM25(collection['text'])
  return out


def benchmark(collection: dict, embeddings: dict | None, *, citations: str = 'examiner', split: str = 'test') -> dict:
  """Every method's scores (overall and by Locarno class), the citations the rule left out, coverage."""
  effective = prior_art.effective_filing_dates(collection['filing'], collection['priority'])
  cited = [sum((collection['cited'][name][k] for name in CITATIONS[citations]), [])
           for k in range(len(collection['ids']))]
  candidates = np.ones(len(cited), bool) if split == 'all' else collection['split'] == split
  if not candidates.any():
    raise ValueError(f'split {split!r} holds no patent of the collection (splits: '
                     f'{sorted(set(collection["split"].tolist()))}, or all)')
  judged = prior_art.judgments(collection['ids'], effective, collection['family'], cited, candidates)
  if not len(judged.queries):
    c = judged.counts  # why none: a small or recent collection cites mostly what lies outside it
    raise ValueError(f'no patent of split {split!r} cites a design of the collection filed before it: no query '
                     f'({c["citations"]} distinct {citations} citations: {c["outside_collection"]} outside the '
                     f'collection, {c["in_family"]} in the family, {c["after_cutoff"]} after the cut-off)')
  query_class = np.char.partition(collection['locarno'][judged.queries].astype(str), '-')[:, 0]
  query_class = np.where(query_class == '', 'none', query_class)
  methods = {}
  for name, scorer in scorers(collection, embeddings, effective).items():
    ranks = prior_art_ranking.citation_ranks(scorer, effective, collection['family'], judged)
    methods[name] = prior_art.summary(prior_art.query_scores(ranks, judged.offsets), query_class)
  return {'task': 'prior_art', 'citations': citations, 'split': split, 'rule': prior_art.__doc__.split('\n\n')[1],
          'tie_rule': prior_art.TIE_RULE, 'methods_described': '\n\n'.join(__doc__.split('\n\n')[2:]).strip(),
          'collection': {'patents': len(collection['ids']),
                         'patents_without_filing_date_left_out': collection['without_filing_date'],
                         'patents_without_claim_text_bm25_reads_title_only': collection['without_claim']},
          'citations_counted': judged.counts, 'coverage': judged.coverage,
          'gallery_size_median': float(np.median(judged.gallery_sizes)),
          'relevant_per_query_mean': float(np.mean(np.diff(judged.offsets))), 'methods': methods}


def save_embeddings(path: str, collection: dict, embeddings: dict) -> None:
  """What each method ranked, with the dates and families that decide the galleries, to recompute anything."""
  iso = lambda d: np.datetime_as_string(d, unit='D')
  vectors = patent_vectors(embeddings)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **embeddings, patent_embeddings=vectors['drawings_mean'],
           filing_dates=iso(collection['filing']), grant_dates=iso(collection['grant']),
           priority_dates=iso(collection['priority']),
           effective_dates=iso(prior_art.effective_filing_dates(collection['filing'], collection['priority'])),
           family=collection['family'], locarno=collection['locarno'], split=collection['split'])
  print('wrote', path)


def load_embeddings(path: str, collection: dict) -> dict:
  """Saved embeddings, checked against the collection they must describe."""
  if not os.path.isfile(path):
    raise ValueError(f'--embeddings {path!r} does not exist')
  with np.load(path, allow_pickle=False) as z:
    missing = [k for k in SAVED if k not in z]
    if missing:
      raise ValueError(f'{path} lacks {missing} (prior_art --save-embeddings writes them)')
    saved = {k: z[k] for k in SAVED}
  if saved['patent_ids'].tolist() != collection['ids'].tolist():
    raise ValueError(f'{path} holds other patents than the data set (or in another order): embed this data set')
  return saved


def print_table(result: dict, file=None) -> None:
  keys = prior_art.METRIC_KEYS
  lines = [f'{"method":<20}' + ''.join(f'{k:>13}' for k in keys)]
  for name, scores in result['methods'].items():
    lines.append(f'{name:<20}' + ''.join(f'{scores[k]:>13.4f}' for k in keys))
  c = result['citations_counted']
  lines.append(f'{result["coverage"]["queries"]} queries of {result["coverage"]["candidates"]} {result["split"]} '
               f'patents; {c["citations"]} distinct citations: {c["kept"]} relevant, {c["outside_collection"]} outside '
               f'the collection, {c["in_family"]} in the family, {c["after_cutoff"]} after the cut-off')
  print('\n'.join(lines), file=file)


def run(args) -> dict:
  """The CLI's --task prior_art (args as eval.__main__ parses them)."""
  import jax  # pylint: disable=import-outside-toplevel
  if args.task != ['prior_art']:
    raise ValueError('--task prior_art runs alone (its collection and queries differ from the other tasks\')')
  if args.compare or args.deeppatent:
    raise ValueError('--task prior_art takes one --checkpoint or --embeddings and a Red Book --data set')
  if not args.data:
    raise ValueError('--task prior_art needs --data (a data set ingested with --redbook)')
  if args.save_embeddings and not args.checkpoint:
    raise ValueError('--save-embeddings needs --checkpoint')
  collection = load_collection(args.data)
  if args.embeddings:
    embeddings = load_embeddings(args.embeddings, collection)
  else:
    from designclip_jax.weights.loader import load_model  # pylint: disable=import-outside-toplevel
    clip, tokenizer, normalization = load_model(args.checkpoint)
    embeddings = embed_collection(clip, tokenizer, args.data, collection, batch_size=args.batch_size,
                                  normalization=normalization)
  result = benchmark(collection, embeddings, citations=args.citations, split=args.split)
  if jax.process_index() == 0:
    if args.save_embeddings:
      save_embeddings(args.save_embeddings, collection, embeddings)
    print_table(result)
    if args.output:
      from designclip_jax import provenance  # pylint: disable=import-outside-toplevel
      os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
      with open(args.output, 'w') as f:
        json.dump({**result, 'provenance': provenance.record(vars(args), args.data)}, f, indent=1, allow_nan=False)
      print('wrote', args.output)
  return result
