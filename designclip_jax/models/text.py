"""Text Transformer tower (CLIP): causal pre-LN encoder pooled at the end-of-text token."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from designclip_jax.models.config import TextConfig
from designclip_jax.models.layers import BlockOptions, Encoder, LayerNorm, param, shard_batch

LEGACY_EOS_TOKEN_ID = 2


def eos_positions(input_ids, eos_token_id: int):
  """Index of the pooled token per row, exactly as transformers chooses it."""
  if eos_token_id == LEGACY_EOS_TOKEN_ID:
    return jnp.argmax(input_ids, axis=-1)  # legacy configs: the EOS id is the largest id in the vocab
  return jnp.argmax(input_ids == eos_token_id, axis=-1)


class TextEmbeddings(nnx.Module):

  def __init__(self, cfg: TextConfig, opts: BlockOptions, *, rngs: nnx.Rngs):
    self.token_embedding = param(rngs, nnx.initializers.normal(0.02), (cfg.vocab_size, cfg.width),
                                 ('vocab', 'embed'))
    self.position_embedding = param(rngs, nnx.initializers.normal(0.01), (cfg.context_length, cfg.width),
                                    (None, 'embed'))
    self.dtype = opts.dtype

  def __call__(self, input_ids):
    length = input_ids.shape[-1]
    if length > self.position_embedding.shape[0]:
      raise ValueError(f'token sequences of length {length} exceed the context length '
                       f'{self.position_embedding.shape[0]}')
    tokens = jnp.take(self.token_embedding[...], input_ids, axis=0)
    return (tokens + self.position_embedding[:length]).astype(self.dtype)


class TextTransformer(nnx.Module):
  """Returns (pooled, tokens, valid): EOS-pooled state (B, W), all final-LN states (B, L, W) and a
  (B, L) mask that is True up to and including the pooled token (later positions are padding)."""

  def __init__(self, cfg: TextConfig, opts: BlockOptions, *, rngs: nnx.Rngs):
    self.embeddings = TextEmbeddings(cfg, opts, rngs=rngs)
    self.encoder = Encoder(cfg.width, cfg.layers, cfg.heads, cfg.mlp_dim, cfg.act, opts, rngs=rngs)
    self.final_layer_norm = LayerNorm(cfg.width, eps=opts.layer_norm_eps, dtype=opts.dtype, rngs=rngs)
    self.eos_token_id = cfg.eos_token_id

  def __call__(self, input_ids):
    length = input_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    tokens = shard_batch(self.final_layer_norm(self.encoder(self.embeddings(shard_batch(input_ids)), causal)))
    eos = eos_positions(input_ids, self.eos_token_id)
    pooled = jnp.take_along_axis(tokens, eos[:, None, None], axis=1)[:, 0]
    valid = jnp.arange(length)[None, :] <= eos[:, None]
    return pooled, tokens, valid
