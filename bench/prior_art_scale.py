"""Time and peak memory of the prior-art metric computation (eval.prior_art: judgments and scores;
eval.prior_art_ranking: every query ranked in its own gallery) on synthetic collections, extrapolated to IMPACT's
0.5M patents.

The collection is synthetic_collection.Collection's invented model (dates, families, Locarno, examiner citations:
the realistic structure of cut-offs and citations; no drawings are drawn); the vectors are random unit vectors
(D = 512, ViT-B/16's width), scored by the Cosine scorer. Queries are a random share of the patents (default 10%,
the test split's share); a query's cost is its gallery (the patents filed before it), so the time of every patent
as a query is extrapolated from the measured time per query, and 0.5M from the measured sizes (time ~ queries x
collection, memory ~ collection): the extrapolated rows say so.

    python bench/prior_art_scale.py                          # 25k, 50k, 100k patents
    python bench/prior_art_scale.py --patents 100000 --query-share 0.1 --dim 512
"""

import argparse
import datetime
import json
import os
import time

import numpy as np

IMPACT = 500_000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, 'docs', 'results', 'prior_art', 'scale.json')


def _status(key: str) -> float:
  """A /proc/self/status line in MiB (VmRSS now, VmHWM the peak since the last reset)."""
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) for line in f if line.startswith(key + ':')) / 1024


def _reset_peak() -> None:
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # Linux: the peak resident set (VmHWM) starts again from the current one


def collection_inputs(n: int, share: float, seed: int = 0) -> dict:
  """ids, effective dates, families, Locarno and the queries' examiner citations from the synthetic model."""
  from designclip_jax.data.synthetic_articles import LOCARNO
  from designclip_jax.data.synthetic_collection import EXAMINER, Collection
  c = Collection(n, seed)
  candidates = np.random.default_rng(seed).random(n) < share
  cited = [[] for _ in range(n)]
  for k in np.flatnonzero(candidates):
    cited[k] = [c.number(r.cited_index) if r.cited_index >= 0 else r.country + r.doc_number
                for r in c.references(int(k)) if r.category == EXAMINER and not r.text]
  effective = (np.array(c.effective) - datetime.date(1970, 1, 1).toordinal()).astype('datetime64[D]')
  return {'ids': np.array([c.number(k) for k in range(n)]), 'effective': effective, 'family': c.root.copy(),
          'locarno': np.array([LOCARNO[c.noun(k)] for k in range(n)]), 'cited': cited, 'candidates': candidates}


def measure(inputs: dict, dim: int, seed: int = 0) -> dict:
  import jax
  from designclip_jax.eval import prior_art, prior_art_ranking
  n = len(inputs['ids'])
  vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  row = {'patents': n, 'dim': dim, 'devices': len(jax.local_devices()), 'inputs_mib': round(_status('VmRSS'), 1)}
  _reset_peak()
  base = _status('VmRSS')
  start = time.perf_counter()
  judged = prior_art.judgments(inputs['ids'], inputs['effective'], inputs['family'], inputs['cited'],
                               inputs['candidates'])
  row['judgments_s'] = time.perf_counter() - start
  start = time.perf_counter()
  ranks = prior_art_ranking.citation_ranks(prior_art_ranking.Cosine(vectors), inputs['effective'], inputs['family'],
                                           judged)
  row['ranks_s'] = time.perf_counter() - start
  start = time.perf_counter()
  cls = np.char.partition(inputs['locarno'][judged.queries], '-')[:, 0]
  scores = prior_art.summary(prior_art.query_scores(ranks, judged.offsets), cls)
  row['scores_s'] = time.perf_counter() - start
  row['peak_over_inputs_mib'] = round(_status('VmHWM') - base, 1)
  row.update(queries=len(judged.queries), relevant=int(judged.relevant.size),
             gallery_median=int(np.median(judged.gallery_sizes)), MAP=scores['MAP'])
  row['ms_per_query'] = 1000 * (row['judgments_s'] + row['ranks_s'] + row['scores_s']) / row['queries']
  return row


def extrapolate(rows: list[dict], share: float) -> list[dict]:
  """Labelled estimates: every patent a query at the largest measured size; 0.5M at the test share and all."""
  big = rows[-1]
  per_query_s = big['ms_per_query'] / 1000
  queries_all = big['queries'] / share  # patents with a relevant citation, all of them queries
  sizes = np.array([r['patents'] for r in rows], float)
  peaks = np.array([r['peak_over_inputs_mib'] for r in rows], float)
  slope, offset = np.polyfit(sizes, peaks, 1) if len(rows) > 1 else (peaks[0] / sizes[0], 0.0)
  grow = IMPACT / big['patents']
  return [
      {'what': f'extrapolated: {big["patents"]:,} patents, every patent a query', 'queries': round(queries_all),
       'seconds': round(per_query_s * queries_all), 'peak_mib': big['peak_over_inputs_mib']},
      {'what': f'extrapolated: {IMPACT:,} patents, {share:.0%} of them queries', 'queries': round(big['queries'] * grow),
       'seconds': round(per_query_s * grow * big['queries'] * grow), 'peak_mib': round(offset + slope * IMPACT)},
      {'what': f'extrapolated: {IMPACT:,} patents, every patent a query', 'queries': round(queries_all * grow),
       'seconds': round(per_query_s * grow * queries_all * grow), 'peak_mib': round(offset + slope * IMPACT)},
  ]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--patents', nargs='+', type=int, default=[25_000, 50_000, 100_000])
  parser.add_argument('--query-share', type=float, default=0.1)
  parser.add_argument('--dim', type=int, default=512)
  parser.add_argument('--out', default=OUT)
  args = parser.parse_args()
  rows = []
  for n in args.patents:
    start = time.perf_counter()
    inputs = collection_inputs(n, args.query_share)
    print(f'{n:,} patents: inputs drawn in {time.perf_counter() - start:.0f} s', flush=True)
    rows.append(measure(inputs, args.dim))
    del inputs
    print(rows[-1], flush=True)
  header = ('patents', 'queries', 'relevant', 'gallery_median', 'judgments_s', 'ranks_s', 'scores_s', 'ms_per_query',
            'peak_over_inputs_mib')
  print('| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header))
  for r in rows:
    print('| ' + ' | '.join(f'{r[k]:,.2f}' if isinstance(r[k], float) else f'{r[k]:,}' for k in header) + ' |')
  estimates = extrapolate(rows, args.query_share)
  print('\n| estimate (not measured) | queries | seconds | peak MiB over inputs |\n|---|---|---|---|')
  for e in estimates:
    print(f'| {e["what"]} | {e["queries"]:,} | {e["seconds"]:,} | {e["peak_mib"]:,} |')
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump({'measured': rows, 'extrapolated': estimates, 'machine': f'{os.cpu_count()} CPU cores',
               'date': datetime.date.today().isoformat(), 'command': 'python bench/prior_art_scale.py ' +
               ' '.join(f'--{k.replace("_", "-")} {" ".join(map(str, v)) if isinstance(v, list) else v}'
                        for k, v in vars(args).items() if k != 'out')}, f, indent=1)
  print('wrote', args.out)


if __name__ == '__main__':
  main()
