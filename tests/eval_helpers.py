"""A tiny random CLIP saved as a Hugging Face directory (no torch, no training) for eval tests."""

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
