"""Vision Transformer tower (CLIP ViT): patchify, class token, learned positions, pre-LN encoder."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from designclip_jax.models.config import VisionConfig
from designclip_jax.models.layers import BlockOptions, Encoder, LayerNorm, gathered, param, shard_batch


class VisionEmbeddings(nnx.Module):

  def __init__(self, cfg: VisionConfig, opts: BlockOptions, *, rngs: nnx.Rngs):
    if cfg.image_size % cfg.patch_size:
      raise ValueError(f'image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}')
    self.patch_size = cfg.patch_size
    self.num_positions = (cfg.image_size // cfg.patch_size) ** 2 + 1
    std = cfg.width ** -0.5
    # Conv weight in HWIO; a stride-p conv without bias is a matmul over flattened patches.
    self.patch_embedding = param(rngs, nnx.initializers.normal(std),
                                 (cfg.patch_size, cfg.patch_size, cfg.channels, cfg.width),
                                 (None, None, None, 'embed'))
    self.class_embedding = param(rngs, nnx.initializers.normal(std), (cfg.width,), ('embed',))
    self.position_embedding = param(rngs, nnx.initializers.normal(std), (self.num_positions, cfg.width),
                                    (None, 'embed'))
    self.dtype = opts.dtype

  def __call__(self, pixels):
    b, h, w, c = pixels.shape
    p = self.patch_size
    if (h // p) * (w // p) + 1 != self.num_positions or h % p or w % p:
      raise ValueError(f'pixels of shape {pixels.shape} do not match the model '
                       f'({self.num_positions - 1} patches of {p}x{p})')
    patches = shard_batch(pixels).reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    patches = shard_batch(patches.reshape(b, (h // p) * (w // p), p * p * c).astype(self.dtype))
    kernel = gathered(self.patch_embedding[...].reshape(p * p * c, -1).astype(self.dtype))
    tokens = patches @ kernel
    cls = jnp.broadcast_to(self.class_embedding[...].astype(self.dtype), (b, 1, tokens.shape[-1]))
    return jnp.concatenate([cls, tokens], axis=1) + self.position_embedding[...].astype(self.dtype)


class VisionTransformer(nnx.Module):
  """Returns (pooled, tokens): the post-LN class token (B, W) and all post-LN tokens (B, 1+N, W)."""

  def __init__(self, cfg: VisionConfig, opts: BlockOptions, *, rngs: nnx.Rngs):
    self.embeddings = VisionEmbeddings(cfg, opts, rngs=rngs)
    self.pre_layrnorm = LayerNorm(cfg.width, eps=opts.layer_norm_eps, dtype=opts.dtype, rngs=rngs)
    self.encoder = Encoder(cfg.width, cfg.layers, cfg.heads, cfg.mlp_dim, cfg.act, opts, rngs=rngs)
    self.post_layernorm = LayerNorm(cfg.width, eps=opts.layer_norm_eps, dtype=opts.dtype, rngs=rngs)

  def __call__(self, pixels):
    x = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
    tokens = shard_batch(self.post_layernorm(x))
    return tokens[:, 0], tokens
