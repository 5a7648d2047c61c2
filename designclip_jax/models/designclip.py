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
    Image and view go through the vision tower as one batch of 2B, interleaved (image i, view i, ...):
    with the batch split in contiguous blocks over devices, every device then holds its own rows of both,
    so no row moves between devices (concatenating [image, view] would shuffle them to and fro).
    """
    b = image.shape[0]
    pixels = jnp.stack([image, view], axis=1).reshape(2 * b, *image.shape[1:]) if with_view else image
    img_emb, img_tokens = self.clip.image_features(pixels)
    view_emb = None
    if with_view:  # (2B, ...) -> (B, 2, ...): [:, 0] the images, [:, 1] the views
      pairs = img_emb.reshape(b, 2, -1)
      img_emb, view_emb = pairs[:, 0], pairs[:, 1]
      img_tokens = img_tokens.reshape(b, 2, *img_tokens.shape[1:])[:, 0]
    txt_emb, txt_tokens, txt_valid = self.clip.text_features(tokens)
    logits = self.head(img_tokens, txt_tokens, txt_valid, img_emb) if with_head else None
    return {'image': img_emb, 'view': view_emb, 'text': txt_emb, 'class_logits': logits}
