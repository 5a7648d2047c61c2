"""Flax NNX models: CLIP towers (``clip``), their blocks (``layers``) and the fusion head (``heads``)."""

from designclip_jax.models.clip import CLIP
from designclip_jax.models.config import PRESETS, CLIPConfig, TextConfig, VisionConfig, preset

__all__ = ['CLIP', 'CLIPConfig', 'TextConfig', 'VisionConfig', 'PRESETS', 'preset']
