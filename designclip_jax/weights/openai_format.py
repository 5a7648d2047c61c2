"""OpenAI-format CLIP state dicts (OpenAI's ``clip/model.py`` names, as in its released ``RN50.pt`` /
``ViT-B-32.pt`` files and open_clip's ``open_clip_model.safetensors``) <-> the HF-style flat names that
``checkpoints`` converts to NNX parameters.

Only renames and the split/fuse of ``attn.in_proj_*`` happen here; the layout changes (transposes) stay in
``checkpoints``' rule table. The ResNet towers, which transformers has no class for, are named after
OpenAI's modules under ``vision_model.`` and pass through unchanged.
"""

from __future__ import annotations

import os
import re

import numpy as np

from designclip_jax.models.config import CLIPConfig, TextConfig, VisionConfig
from designclip_jax.models.text import LEGACY_EOS_TOKEN_ID

OPENAI_FILES = ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin')
_NON_TENSORS = {'input_resolution', 'context_length', 'vocab_size'}  # scalars OpenAI's .pt files carry

# Per transformer block: OpenAI sub-name <-> HF sub-name (attn.in_proj_* is split/fused separately).
_BLOCK = [('ln_1.', 'layer_norm1.'), ('ln_2.', 'layer_norm2.'), ('mlp.c_fc.', 'mlp.fc1.'),
          ('mlp.c_proj.', 'mlp.fc2.'), ('attn.out_proj.', 'self_attn.out_proj.')]
# Whole names (after the block rules): OpenAI <-> HF, and whether the tensor is transposed.
_TOP = [('token_embedding.weight', 'text_model.embeddings.token_embedding.weight', False),
        ('positional_embedding', 'text_model.embeddings.position_embedding.weight', False),
        ('ln_final.', 'text_model.final_layer_norm.', False),
        ('text_projection', 'text_projection.weight', True),
        ('logit_scale', 'logit_scale', False)]
_VIT_TOP = [('visual.conv1.weight', 'vision_model.embeddings.patch_embedding.weight', False),
        ('visual.class_embedding', 'vision_model.embeddings.class_embedding', False),
        ('visual.positional_embedding', 'vision_model.embeddings.position_embedding.weight', False),
        ('visual.ln_pre.', 'vision_model.pre_layrnorm.', False),
        ('visual.ln_post.', 'vision_model.post_layernorm.', False),
        ('visual.proj', 'visual_projection.weight', True)]
_PREFIXES = [('transformer.resblocks.', 'text_model.encoder.layers.'),
             ('visual.transformer.resblocks.', 'vision_model.encoder.layers.')]


def is_openai_checkpoint(path: str) -> bool:
  """A state-dict file (.pt/.bin/.safetensors) or a directory holding open_clip's weight file."""
  if os.path.isfile(path):
    return True
  return os.path.isdir(path) and not os.path.isfile(os.path.join(path, 'config.json')) and any(
      os.path.isfile(os.path.join(path, f)) for f in OPENAI_FILES)


def _weights_file(path: str) -> str:
  if os.path.isdir(path):
    return next(os.path.join(path, f) for f in OPENAI_FILES if os.path.isfile(os.path.join(path, f)))
  return path


def _clean(state: dict, path: str) -> dict:
  """Drop OpenAI's scalar entries and DataParallel's 'module.' prefix; refuse what is not a CLIP state dict."""
  state = {k.removeprefix('module.'): v for k, v in state.items() if k not in _NON_TENSORS}
  if 'token_embedding.weight' not in state:
    raise ValueError(f'{path} is not an OpenAI-format CLIP state dict (no token_embedding.weight)')
  return state


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Tensors of an OpenAI-format checkpoint as float32 numpy; .pt/.bin need torch, .safetensors does not."""
  path = _weights_file(path)
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    state = load_file(path)
  else:
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f'reading {path} needs PyTorch (pip install torch); or convert it to .safetensors') from e
    state = {k: v.float().numpy() for k, v in _read_torch_file(path, torch).items()}
  return {k: np.asarray(v, np.float32) for k, v in _clean(state, path).items()}


def read_shapes(path: str) -> dict[str, tuple[int, ...]]:
  """Tensor shapes only: from the safetensors header without reading any weights (a .pt is read whole)."""
  file = _weights_file(path)
  if not file.endswith('.safetensors'):
    return {k: v.shape for k, v in read_state_dict(path).items()}
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  with safe_open(file, framework='np') as f:
    return _clean({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, file)


def _read_torch_file(path: str, torch) -> dict:
  """OpenAI's released files are TorchScript archives; open_clip's .bin are plain (maybe wrapped) state dicts."""
  try:
    return torch.jit.load(path, map_location='cpu').state_dict()
  except RuntimeError:
    pass
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pickle, zip and torch errors alike: name the file
    raise ValueError(f'{path} is not a PyTorch checkpoint: {e.__class__.__name__}: {e}') from e
  if not isinstance(state, dict):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state dict')
  return state.get('state_dict', state)


def config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> CLIPConfig:
  """Tower shapes read off the tensor shapes, as OpenAI's ``build_model`` does (heads = width / 64); text is
  pooled at argmax(ids), as OpenAI's encode_text does."""
  def count(prefix):
    return len({k[len(prefix):].split('.')[0] for k in shapes if k.startswith(prefix)})

  text_width = shapes['ln_final.weight'][0]
  text = TextConfig(vocab_size=shapes['token_embedding.weight'][0],
                    context_length=shapes['positional_embedding'][0], width=text_width,
                    layers=count('transformer.resblocks.'), heads=text_width // 64, mlp_dim=4 * text_width,
                    act='quick_gelu', eos_token_id=LEGACY_EOS_TOKEN_ID)
  embed_dim = shapes['text_projection'][1]
  if 'visual.proj' in shapes:
    width, _, patch, _ = shapes['visual.conv1.weight']
    grid = round((shapes['visual.positional_embedding'][0] - 1) ** 0.5)
    vision = VisionConfig(image_size=patch * grid, patch_size=patch, width=width,
                          layers=count('visual.transformer.resblocks.'), heads=width // 64, mlp_dim=4 * width)
  else:
    width = shapes['visual.layer1.0.conv1.weight'][0]
    grid = round((shapes['visual.attnpool.positional_embedding'][0] - 1) ** 0.5)
    vision = VisionConfig(image_size=32 * grid, width=width, heads=width * 32 // 64,
                          stage_blocks=tuple(count(f'visual.layer{i}.') for i in range(1, 5)))
  return CLIPConfig(vision=vision, text=text, embed_dim=embed_dim)


def format_mismatches(cfg: CLIPConfig) -> list[str]:
  """What OpenAI's format cannot express about ``cfg``: its loaders infer heads (width / 64), MLP width
  (4x), activation (quick_gelu) and LayerNorm epsilon (1e-5) instead of storing them."""
  problems = []
  towers = [('text', cfg.text)] + ([] if cfg.vision.is_resnet else [('vision', cfg.vision)])
  for name, tower in towers:
    if tower.heads != tower.width // 64:
      problems.append(f'{name} heads {tower.heads} != width {tower.width} / 64')
    if tower.mlp_dim != 4 * tower.width:
      problems.append(f'{name} mlp_dim {tower.mlp_dim} != 4 x width {tower.width}')
    if tower.act != 'quick_gelu':
      problems.append(f'{name} act {tower.act!r} != quick_gelu')
  if cfg.vision.is_resnet and cfg.vision.heads != cfg.vision.width * 32 // 64:
    problems.append(f'ResNet attention-pool heads {cfg.vision.heads} != width {cfg.vision.width} x 32 / 64')
  if cfg.layer_norm_eps != 1e-5:
    problems.append(f'layer_norm_eps {cfg.layer_norm_eps} != 1e-5')
  return problems


def _rename(name: str, to_hf: bool, vit: bool) -> tuple[str, bool]:
  """One tensor name across formats; returns (new name, transposed?). ResNet towers pass through."""
  src, dst = (0, 1) if to_hf else (1, 0)
  for pair in _PREFIXES:
    if name.startswith(pair[src]):
      rest = name[len(pair[src]):]
      for block in _BLOCK:
        rest = re.sub('^(\\d+\\.)' + re.escape(block[src]), lambda m, b=block: m.group(1) + b[dst], rest)
      return pair[dst] + rest, False
  for *pair, transposed in _TOP + (_VIT_TOP if vit else []):
    if name == pair[src] or (pair[src].endswith('.') and name.startswith(pair[src])):
      return pair[dst] + name[len(pair[src]):], transposed
  resnet = ('visual.', 'vision_model.')
  if name.startswith(resnet[src]):
    return resnet[dst] + name[len(resnet[src]):], False
  raise KeyError(f'tensor {name!r} has no counterpart in the {"HF" if to_hf else "OpenAI"} CLIP layout')


def to_hf_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  vit = 'visual.proj' in state
  out = {}
  for name, value in state.items():
    if name.endswith('num_batches_tracked'):
      continue
    fused = re.fullmatch(r'(.*)\.attn\.in_proj_(weight|bias)', name)
    if fused:
      base, _ = _rename(fused.group(1) + '.ln_1.weight', True, vit)
      base = base.removesuffix('layer_norm1.weight') + 'self_attn.'
      for part, chunk in zip('qkv', np.split(value, 3, axis=0), strict=True):
        out[f'{base}{part}_proj.{fused.group(2)}'] = chunk
      continue
    new, transposed = _rename(name, True, vit)
    out[new] = value.T if transposed else value
  return out


def from_hf_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  vit = 'visual_projection.weight' in tensors
  out = {}
  for name, value in tensors.items():
    split = re.fullmatch(r'(.*)\.self_attn\.([qkv])_proj\.(weight|bias)', name)
    if split:
      if split.group(2) != 'q':
        continue  # fused when q is seen
      base, kind = split.group(1), split.group(3)
      fused_base, _ = _rename(base + '.layer_norm1.weight', False, vit)
      parts = [tensors[f'{base}.self_attn.{p}_proj.{kind}'] for p in 'qkv']
      out[fused_base.removesuffix('ln_1.weight') + f'attn.in_proj_{kind}'] = np.concatenate(parts, axis=0)
      continue
    new, transposed = _rename(name, False, vit)
    out[new] = value.T if transposed else value
  return out
