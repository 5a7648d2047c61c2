"""DesignCLIP losses as pure functions of arrays.

    L = λ1·L_CACLS + λ2·L_CACL + λ3·L_MVCL

L_CACL (image↔caption) and L_MVCL (view↔view) are the same class-weighted symmetric InfoNCE;
L_CACLS is class-weighted cross-entropy of the fusion head's logits. Example weights are the
per-class 1/f_c^β, normalised to mean 1 over the *global* batch.

The contrastive terms are written for "local rows against all columns": each device scores its own
rows against the gathered embeddings of the whole global batch, so memory per device is linear in
the global batch. Called with the full batch as both rows and columns (offset 0) they are the
ordinary single-device losses; ``designclip_jax.train.step`` wraps them in shard_map.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's cap on the inverse temperature (100)


def clamp_logit_scale(logit_scale):
  """The log inverse temperature kept in [0, ln 100], as open_clip does after each optimizer update.
  Clamping the parameter, not its use in the loss, keeps the gradient whole at the cap (OpenAI's
  checkpoints sit exactly at ln 100), so a step that wants a higher temperature can always take it."""
  return jnp.clip(logit_scale, 0.0, MAX_LOGIT_SCALE)


def l2_normalize(x, eps: float = 1e-12):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _weighted_ce_rows(logits, targets, weights):
  """Σ_i w_i · CE(logits_i, targets_i): summed, not averaged (callers divide by the global batch)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
  return jnp.sum(weights * nll)


def contrastive_sum(rows_a, rows_b, cols_a, cols_b, row_ids, col_ids, row_offset, weights, logit_scale):
  """Summed (not averaged) symmetric InfoNCE of local rows against all columns.

  rows_a, rows_b: (b, D) this device's embeddings of the two modalities (pairs are row-aligned).
  cols_a, cols_b: (B, D) the same for the whole global batch; local row i is global row offset + i.
  row_ids, col_ids: group ids (records; or families, to mask a record's whole family); a column of the same
    group as row i (other than i itself) is removed from row i's softmax, never counted as a negative.
  weights: (b,) normalised example weights. logit_scale: scalar log inverse temperature, used as is (the
    train step clamps the parameter after each update: ``clamp_logit_scale``).
  Returns Σ_i w_i · ½(CE_a→b(i) + CE_b→a(i)).
  """
  scale = jnp.exp(logit_scale)
  rows_a, rows_b = l2_normalize(rows_a), l2_normalize(rows_b)
  cols_a, cols_b = l2_normalize(cols_a), l2_normalize(cols_b)
  targets = row_offset + jnp.arange(rows_a.shape[0])
  duplicate = (row_ids[:, None] == col_ids[None, :]) & (targets[:, None] != jnp.arange(cols_a.shape[0])[None, :])
  neg_inf = jnp.finfo(jnp.float32).min

  def one_direction(rows, cols):
    logits = scale * jnp.dot(rows, cols.T, preferred_element_type=jnp.float32)
    return _weighted_ce_rows(jnp.where(duplicate, neg_inf, logits), targets, weights)

  return 0.5 * (one_direction(rows_a, cols_b) + one_direction(rows_b, cols_a))


def weighted_infonce(a, b, ids, weights, logit_scale):
  """Single-device class-weighted symmetric InfoNCE over the whole batch (mean over examples)."""
  return contrastive_sum(a, b, a, b, ids, ids, 0, weights, logit_scale) / a.shape[0]


def weighted_cross_entropy(logits, labels, weights):
  """Class-weighted classification loss (mean over examples of w_i · CE_i)."""
  return _weighted_ce_rows(logits, labels, weights) / logits.shape[0]


def normalize_weights(raw_weights, global_sum, global_count):
  """Weights scaled so their mean over the global batch is 1."""
  return raw_weights * (global_count / global_sum)


def total_loss(terms: dict, lambdas: tuple[float, float, float]):
  """λ1·cacls + λ2·cacl + λ3·mvcl; a term whose λ is 0 is left out entirely."""
  l1, l2, l3 = lambdas
  total = 0.0
  for lam, name in ((l1, 'cacls'), (l2, 'cacl'), (l3, 'mvcl')):
    if lam:
      total = total + lam * terms[name]
  return total
