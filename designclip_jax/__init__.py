"""DesignCLIP in JAX/Flax NNX: CLIP towers, DesignCLIP losses, sharded training and patent evaluation."""

from designclip_jax.weights.hf_format import from_pretrained, save_openai, save_pretrained
from designclip_jax.models import CLIP, CLIPConfig, preset

__all__ = ['CLIP', 'CLIPConfig', 'preset', 'from_pretrained', 'save_openai', 'save_pretrained']
__version__ = '0.1.0'
