"""The two-tower CLIP model: towers, projections and the learnable logit scale."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from designclip_jax.models.config import CLIPConfig
from designclip_jax.models.layers import BlockOptions, Dense, param
from designclip_jax.models.resnet import ModifiedResNet
from designclip_jax.models.text import TextTransformer
from designclip_jax.models.vision import VisionTransformer


class CLIP(nnx.Module):
  """CLIP towers with HF-compatible parameter names.

  ``dtype`` is the compute dtype (parameters stay float32); ``remat`` recomputes each block's
  activations in the backward pass to trade FLOPs for memory; ``batchnorm`` ('frozen' | 'batch') is the
  ResNet tower's BatchNorm mode (models/resnet.py).
  """

  def __init__(self, config: CLIPConfig, *, dtype=jnp.float32, remat: bool = False, batchnorm: str = 'frozen',
               rngs: nnx.Rngs):
    self.config = config
    opts = BlockOptions(dtype=dtype, layer_norm_eps=config.layer_norm_eps, remat=remat)
    self.text_model = TextTransformer(config.text, opts, rngs=rngs)
    if config.vision.is_resnet:  # the attention pool projects to the joint space itself
      self.vision_model = ModifiedResNet(config.vision, config.embed_dim, opts, batchnorm=batchnorm, rngs=rngs)
      self.visual_projection = None
    else:
      self.vision_model = VisionTransformer(config.vision, opts, rngs=rngs)
      self.visual_projection = Dense(config.vision.width, config.embed_dim, ('embed', 'joint'), use_bias=False,
                                     dtype=dtype, rngs=rngs)
    self.text_projection = Dense(config.text.width, config.embed_dim, ('embed', 'joint'), use_bias=False,
                                 dtype=dtype, rngs=rngs)
    self.logit_scale = param(rngs, nnx.initializers.constant(config.logit_scale_init), (), ())

  def image_features(self, pixels):
    """pixels (B, H, W, C), CLIP-normalised -> (embedding (B, D) float32, tokens (B, 1+N, Wv))."""
    pooled, tokens = self.vision_model(pixels)
    if self.visual_projection is not None:
      pooled = self.visual_projection(pooled)
    return pooled.astype(jnp.float32), tokens

  def text_features(self, input_ids):
    """input_ids (B, L) int32 -> (embedding (B, D) float32, tokens (B, L, Wt), valid (B, L))."""
    pooled, tokens, valid = self.text_model(input_ids)
    return self.text_projection(pooled).astype(jnp.float32), tokens, valid

  def encode_image(self, pixels):
    """Projected, un-normalised image embeddings (B, D)."""
    return self.image_features(pixels)[0]

  def encode_text(self, input_ids):
    """Projected, un-normalised text embeddings (B, D)."""
    return self.text_features(input_ids)[0]

  def __call__(self, pixels, input_ids):
    """CLIP logits_per_image (B_img, B_txt), as transformers.CLIPModel computes them."""
    img = self.encode_image(pixels)
    txt = self.encode_text(input_ids)
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
    return jnp.exp(self.logit_scale[...]) * img @ txt.T
