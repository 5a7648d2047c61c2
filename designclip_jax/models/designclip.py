"""DesignCLIP = CLIP towers + a classification head (fusion or linear)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from designclip_jax.models.clip import CLIP
from designclip_jax.models.heads import FusionHead, LinearHead
from designclip_jax.models.layers import BlockOptions

HEADS = ('fusion', 'linear')


class DesignCLIP(nnx.Module):

  def __init__(self, clip: CLIP, num_classes: int, *, head: str = 'fusion', fusion_width: int = 256,
               fusion_layers: int = 1, fusion_heads: int = 4, dtype=jnp.float32, rngs: nnx.Rngs):
    if head not in HEADS:
      raise ValueError(f'head {head!r} is not one of {HEADS}')
    self.clip = clip
    cfg = clip.config
    opts = BlockOptions(dtype=dtype, layer_norm_eps=cfg.layer_norm_eps)
    if head == 'fusion':
      self.head = FusionHead(cfg.image_token_width, cfg.text.width, num_classes, width=fusion_width,
                             layers=fusion_layers, heads=fusion_heads, opts=opts, rngs=rngs)
    else:
      self.head = LinearHead(cfg.embed_dim, num_classes, opts=opts, rngs=rngs)

  def __call__(self, image, view, tokens, *, with_view: bool = True, with_head: bool = True):
    """Embeddings and class logits for one batch.

    Returns dict(image (B, D), text (B, D), view (B, D) or None, class_logits (B, C) or None).
    Image and view go through the vision tower as one batch of 2B.
    """
    b = image.shape[0]
    pixels = jnp.concatenate([image, view]) if with_view else image
    img_emb, img_tokens = self.clip.image_features(pixels)
    txt_emb, txt_tokens, txt_valid = self.clip.text_features(tokens)
    logits = self.head(img_tokens[:b], txt_tokens, txt_valid, img_emb[:b]) if with_head else None
    return {'image': img_emb[:b], 'view': img_emb[b:] if with_view else None, 'text': txt_emb,
            'class_logits': logits}
