"""Classification heads for L_CACLS: the attention fusion head over image ⊕ text tokens, and the plain
linear head over the image embedding (the ablation baseline)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from designclip_jax.models.layers import BlockOptions, Dense, Encoder, LayerNorm, param


class FusionHead(nnx.Module):
  """Project both token sequences to ``width``, tag each with a type embedding, prepend a learned CLS
  token, run a small pre-LN transformer over [CLS, image tokens, text tokens] (text padding masked),
  and classify the CLS state."""

  def __init__(self, vision_width: int, text_width: int, num_classes: int, *, width: int = 256, layers: int = 1,
               heads: int = 4, opts: BlockOptions = BlockOptions(), rngs: nnx.Rngs):
    self.image_proj = Dense(vision_width, width, ('embed', 'fusion'), dtype=opts.dtype, rngs=rngs)
    self.text_proj = Dense(text_width, width, ('embed', 'fusion'), dtype=opts.dtype, rngs=rngs)
    self.type_embedding = param(rngs, nnx.initializers.normal(0.02), (2, width), (None, 'fusion'))
    self.cls_token = param(rngs, nnx.initializers.normal(0.02), (width,), ('fusion',))
    self.encoder = Encoder(width, layers, heads, 4 * width, 'gelu', opts, rngs=rngs)
    self.norm = LayerNorm(width, eps=opts.layer_norm_eps, dtype=opts.dtype, rngs=rngs)
    self.classifier = Dense(width, num_classes, ('fusion', None), dtype=opts.dtype, rngs=rngs)

  def __call__(self, image_tokens, text_tokens, text_valid, image_embedding=None):
    b = image_tokens.shape[0]
    img = self.image_proj(image_tokens) + self.type_embedding[0].astype(image_tokens.dtype)
    txt = self.text_proj(text_tokens) + self.type_embedding[1].astype(text_tokens.dtype)
    cls = jnp.broadcast_to(self.cls_token[...].astype(img.dtype), (b, 1, img.shape[-1]))
    x = jnp.concatenate([cls, img, txt], axis=1)
    valid = jnp.concatenate([jnp.ones((b, 1 + img.shape[1]), bool), text_valid], axis=1)
    x = self.encoder(x, valid[:, None, None, :])
    return self.classifier(self.norm(x[:, 0])).astype(jnp.float32)


class LinearHead(nnx.Module):
  """Class logits from the L2-normalised image embedding only."""

  def __init__(self, embed_dim: int, num_classes: int, *, opts: BlockOptions = BlockOptions(), rngs: nnx.Rngs):
    self.classifier = Dense(embed_dim, num_classes, ('joint', None), dtype=opts.dtype, rngs=rngs)

  def __call__(self, image_tokens, text_tokens, text_valid, image_embedding=None):
    emb = image_embedding / jnp.linalg.norm(image_embedding, axis=-1, keepdims=True)
    return self.classifier(emb).astype(jnp.float32)
