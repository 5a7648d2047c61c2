"""Everything needed to rebuild a run's model: saved as ``model.json`` in the workdir so the eval
CLI can restore a training checkpoint without the training config."""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
from flax import nnx

from designclip_jax.weights import hf_format
from designclip_jax.weights.run_checkpoints import absolute
from designclip_jax.data.tokenizer import Tokenizer
from designclip_jax.models import CLIP, CLIPConfig, TextConfig, VisionConfig, preset
from designclip_jax.models.designclip import DesignCLIP

SPEC_FILE = 'model.json'


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  clip: CLIPConfig
  num_classes: int
  tokenizer_dir: str
  head: str = 'fusion'
  fusion_width: int = 256
  fusion_layers: int = 1
  fusion_heads: int = 4
  dtype: str = 'float32'
  remat: bool = False
  pretrained: str = ''  # checkpoint the towers start from (HF directory or OpenAI format; '' = random init)
  pixel_normalization: str = 'clip'  # data.images.PIXEL_NORMALIZATIONS
  batchnorm: str = 'frozen'  # ResNet towers only: models.resnet.BATCHNORM_MODES

  def tokenizer(self) -> Tokenizer:
    return Tokenizer.from_pretrained(self.tokenizer_dir, self.clip.text.context_length)

  def build(self, seed: int = 0) -> DesignCLIP:
    dtype = jnp.dtype(self.dtype)
    clip = CLIP(self.clip, dtype=dtype, remat=self.remat, batchnorm=self.batchnorm, rngs=nnx.Rngs(seed))
    return DesignCLIP(clip, self.num_classes, head=self.head, fusion_width=self.fusion_width,
                      fusion_layers=self.fusion_layers, fusion_heads=self.fusion_heads, dtype=dtype,
                      rngs=nnx.Rngs(seed + 1))

  def save(self, workdir) -> None:
    workdir = absolute(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

  @classmethod
  def load(cls, workdir) -> 'ModelSpec':
    raw = json.loads((absolute(workdir) / SPEC_FILE).read_text())
    c = raw.pop('clip')
    clip = CLIPConfig(vision=VisionConfig(**c.pop('vision')), text=TextConfig(**c.pop('text')), **c)
    return cls(clip=clip, **raw)


def spec_from_config(model_cfg, num_classes: int, data_tokenizer_dir: str) -> ModelSpec:
  """Tower shapes from a pretrained checkpoint, or from a preset (sized to the data's tokenizer)."""
  if model_cfg.init:
    clip = hf_format.load_config(model_cfg.init)
    tokenizer_dir = model_cfg.init if os.path.isdir(model_cfg.init) else os.path.dirname(model_cfg.init)
    clip = hf_format.pool_at_tokenizer_eos(clip, Tokenizer.from_pretrained(tokenizer_dir))
  else:
    tokenizer = Tokenizer.from_pretrained(data_tokenizer_dir)
    clip = preset(model_cfg.preset, **dict(model_cfg.overrides)).replace(
        text_vocab_size=tokenizer.vocab_size, text_eos_token_id=tokenizer.eos_token_id)
    tokenizer_dir = data_tokenizer_dir
  return ModelSpec(clip=clip, num_classes=num_classes, tokenizer_dir=str(absolute(tokenizer_dir)),
                   head=model_cfg.head, fusion_width=model_cfg.fusion_width, fusion_layers=model_cfg.fusion_layers,
                   fusion_heads=model_cfg.fusion_heads, dtype=model_cfg.dtype, remat=model_cfg.remat,
                   pretrained=str(absolute(model_cfg.init)) if model_cfg.init else '',
                   pixel_normalization=model_cfg.pixel_normalization,
                   batchnorm=model_cfg.batchnorm)
