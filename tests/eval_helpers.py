"""Eval test helpers: a tiny random CLIP saved as a Hugging Face directory (no torch, no training), and
DeepPatent's official evaluation re-written as the reference for image retrieval."""

import numpy as np
from flax import nnx

from designclip_jax import save_pretrained
from designclip_jax.data import pipeline
from designclip_jax.data.tokenizer import Tokenizer
from designclip_jax.models.clip import CLIP
from designclip_jax.models.config import preset


def tiny_clip_dir(path: str, data_dir: str, seed: int = 0) -> str:
  """A 1-layer ViT/text CLIP (32 px, width 64) sized to the synthetic set's tokenizer, with its tokenizer."""
  tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)
  config = preset('tiny').replace(vision_image_size=32, vision_patch_size=8, vision_layers=1, vision_width=64,
                                  vision_heads=2, vision_mlp_dim=128, text_layers=1, text_width=64, text_heads=2,
                                  text_mlp_dim=128, text_context_length=32, text_vocab_size=tokenizer.vocab_size,
                                  text_eos_token_id=tokenizer.eos_token_id,
                                  embed_dim=32)
  save_pretrained(CLIP(config, rngs=nnx.Rngs(seed)), path, tokenizer=tokenizer)
  return path


def deeppatent_official(scores, ql, gl, ks, own=None):
  """GoFigure-LANL/DeepPatent-dataset, src/dirtorch, re-written: datasets/dataset.py Dataset.eval_query_AP
  (ground truth 1 for the query's label, -1 otherwise, 0 = junk for the query's own row when the query
  set is the DB (get_query_groundtruth); AP = utils/evaluation.py compute_AP, scikit-learn's
  average_precision_score, over the non-junk items; -1 for a query without relevant item) and
  Dataset.eval_query_top (correct = [l == q_label for l in labels], reordered by (-scores).argsort(); hit
  at k = correct[:k].any(), for k < len(correct)), aggregated as test_dir.py eval_model (mAP = mean of the
  APs >= 0; top k = mean over every query). The sort here is stable (the official one is numpy's default
  quicksort: only exact ties can fall otherwise). ``own[i]``: query i's own row, left out of its top-k
  too (leave-one-out)."""
  from sklearn.metrics import average_precision_score  # pylint: disable=import-outside-toplevel
  aps, tops = [], []
  for i, s in enumerate(scores):
    keep = np.ones(len(gl), bool)
    if own is not None:
      keep[own[i]] = False
    gt = np.where(gl == ql[i], 1, -1)[keep]
    aps.append(average_precision_score(gt > 0, s[keep]) if (gt > 0).any() else -1)
    correct = gt[(-s[keep]).argsort(kind='stable')] > 0
    tops.append({k: float(correct[:k].any()) for k in ks if k < len(correct)})
  out = {'mAP': float(np.mean([a for a in aps if a >= 0]))}
  out.update({f'rank@{k}': float(np.mean([t[k] for t in tops])) for k in tops[0]})
  return out, np.array([a if a >= 0 else np.nan for a in aps])
