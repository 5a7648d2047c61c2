"""Tower shapes and the preset table (OpenAI CLIP shapes plus a tiny CPU preset)."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  image_size: int = 224
  patch_size: int = 32
  width: int = 768
  layers: int = 12
  heads: int = 12
  mlp_dim: int = 3072
  act: str = 'quick_gelu'
  channels: int = 3
  # Non-empty: CLIP's modified ResNet with this many bottlenecks per stage (width = stem width, heads =
  # attention-pool heads; patch_size, layers, mlp_dim and act are unused). Empty: a ViT.
  stage_blocks: tuple[int, ...] = ()

  @property
  def is_resnet(self) -> bool:
    return bool(self.stage_blocks)


@dataclasses.dataclass(frozen=True)
class TextConfig:
  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  layers: int = 12
  heads: int = 8
  mlp_dim: int = 2048
  act: str = 'quick_gelu'
  # Pooling follows transformers: first occurrence of eos_token_id, or argmax of the ids when the
  # config carries the legacy eos_token_id == 2.
  eos_token_id: int = 49407


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  embed_dim: int = 512
  layer_norm_eps: float = 1e-5
  logit_scale_init: float = math.log(1 / 0.07)

  @property
  def image_token_width(self) -> int:
    """Width of the image tokens the tower returns: ViT hidden states, or ResNet attention-pool outputs."""
    return self.embed_dim if self.vision.is_resnet else self.vision.width

  def replace(self, **changes) -> 'CLIPConfig':
    """Top-level fields by name; tower fields as ``vision_<field>`` / ``text_<field>``."""
    vision = {k[len('vision_'):]: v for k, v in changes.items() if k.startswith('vision_')}
    text = {k[len('text_'):]: v for k, v in changes.items() if k.startswith('text_')}
    top = {k: v for k, v in changes.items() if not k.startswith(('vision_', 'text_'))}
    return dataclasses.replace(self, vision=dataclasses.replace(self.vision, **vision),
                               text=dataclasses.replace(self.text, **text), **top)


PRESETS: dict[str, CLIPConfig] = {
    'ViT-B/32': CLIPConfig(),
    'ViT-B/16': CLIPConfig(vision=VisionConfig(patch_size=16)),
    'ViT-L/14': CLIPConfig(
        vision=VisionConfig(patch_size=14, width=1024, layers=24, heads=16, mlp_dim=4096),
        text=TextConfig(width=768, heads=12, mlp_dim=3072),
        embed_dim=768),
    # OpenAI's ResNet baselines: stem width 64, attention-pool heads = width * 32 / 64.
    'RN50': CLIPConfig(vision=VisionConfig(width=64, heads=32, stage_blocks=(3, 4, 6, 3)),
                       text=TextConfig(), embed_dim=1024),
    'RN101': CLIPConfig(vision=VisionConfig(width=64, heads=32, stage_blocks=(3, 4, 23, 3))),
    # Small enough to train from scratch on a 2-core CPU in minutes.
    'tiny': CLIPConfig(
        vision=VisionConfig(image_size=64, patch_size=8, width=128, layers=3, heads=4, mlp_dim=512, act='gelu'),
        text=TextConfig(vocab_size=2048, context_length=48, width=128, layers=3, heads=4, mlp_dim=512,
                        act='gelu', eos_token_id=1),
        embed_dim=128),
}


def preset(name: str, **changes) -> CLIPConfig:
  if name not in PRESETS:
    raise ValueError(f'unknown model preset {name!r}; choose one of {sorted(PRESETS)}')
  return PRESETS[name].replace(**changes) if changes else PRESETS[name]
