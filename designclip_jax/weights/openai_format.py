"""OpenAI-format CLIP state dicts (OpenAI's ``clip/model.py`` names, as in its released ``RN50.pt`` /
``ViT-B-32.pt`` files and open_clip's ``open_clip_model.safetensors``) <-> the HF-style flat names that
``hf_format`` converts to NNX parameters.

Only renames and the split/fuse of ``attn.in_proj_*`` happen here; the layout changes (transposes) stay in
``hf_format``' rule table. The ResNet towers, which transformers has no class for, are named after
OpenAI's modules under ``vision_model.`` and pass through unchanged.

The tensors do not say which activation the transformer MLPs use: OpenAI's models use QuickGELU, most of
open_clip's use GELU. It is taken from where the checkpoint says it (the module class names of a
TorchScript archive, as OpenAI's released .pt files are; open_clip's ``open_clip_config.json`` beside
the weights) or from the caller; a checkpoint that says nothing, loaded without one, is an error.

A TorchScript archive is code, run as it loads (its modules' ``__setstate__``). Only OpenAI's released files,
recognised by their SHA-256, are loaded as TorchScript without being asked (``trust_torchscript``); every other
.pt/.bin goes through ``torch.load(weights_only=True)``, which unpickles tensors and plain containers only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile

import numpy as np

from designclip_jax.data.images import CLIP_MEAN, CLIP_STD
from designclip_jax.models.config import CLIPConfig, TextConfig, VisionConfig
from designclip_jax.models.text import LEGACY_EOS_TOKEN_ID

OPENAI_FILES = ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin')
OPEN_CLIP_CONFIG = 'open_clip_config.json'  # open_clip's model description, beside the weights
ACTIVATIONS = ('quick_gelu', 'gelu')
_TORCH_ACTIVATIONS = {'QuickGELU': 'quick_gelu', 'GELU': 'gelu'}  # class names of the modules at *.mlp.gelu
_NON_TENSORS = {'input_resolution', 'context_length', 'vocab_size'}  # scalars OpenAI's .pt files carry
# SHA-256 of OpenAI's released CLIP checkpoints: the hashes their download URLs carry, which clip.load checks
# (openai/CLIP clip/clip.py, _MODELS and _download).
OPENAI_RELEASED_SHA256 = {
    'afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762': 'RN50.pt',
    '8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599': 'RN101.pt',
    '7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd': 'RN50x4.pt',
    '52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa': 'RN50x16.pt',
    'be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c': 'RN50x64.pt',
    '40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af': 'ViT-B-32.pt',
    '5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f': 'ViT-B-16.pt',
    'b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836': 'ViT-L-14.pt',
    '3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02': 'ViT-L-14-336px.pt',
}

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


def load_safetensors(file: str) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file as numpy, bfloat16 included: numpy resolves the 'bfloat16' dtype that
  safetensors asks for only once ml_dtypes has registered it."""
  import ml_dtypes  # pylint: disable=import-outside-toplevel,unused-import
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  return load_file(file)


def read_state_dict(path: str, trust_torchscript: bool = False) -> tuple[dict[str, np.ndarray], str | None]:
  """Tensors of an OpenAI-format checkpoint as float32 numpy (.pt/.bin need torch, .safetensors does not),
  and the activation the checkpoint itself declares (None when it does not: see ``activation``).
  ``trust_torchscript``: load a TorchScript archive that is not one of OpenAI's released files (it runs
  the archive's code)."""
  file = _weights_file(path)
  if file.endswith('.safetensors'):
    state, declared = load_safetensors(file), None
  else:
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f'reading {file} needs PyTorch (pip install torch); or convert it to .safetensors') from e
    state, declared = _read_torch_file(file, torch, trust_torchscript)
    state = {k: v.float().numpy() for k, v in state.items()}
  return {k: np.asarray(v, np.float32) for k, v in _clean(state, file).items()}, declared


def read_shapes(path: str, trust_torchscript: bool = False) -> tuple[dict[str, tuple[int, ...]], str | None]:
  """Tensor shapes only (from the safetensors header without reading any weights; a .pt is read whole), and
  the activation the checkpoint declares, as ``read_state_dict``."""
  file = _weights_file(path)
  if not file.endswith('.safetensors'):
    state, declared = read_state_dict(path, trust_torchscript)
    return {k: v.shape for k, v in state.items()}, declared
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  with safe_open(file, framework='np') as f:
    return _clean({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, file), None


def _is_torchscript(path: str) -> bool:
  """A zip archive with TorchScript's constants.pkl (as torch.serialization recognises one)."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any(name.rsplit('/', 1)[-1] == 'constants.pkl' for name in archive.namelist())


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.hexdigest()


def _read_torch_file(path: str, torch, trust_torchscript: bool) -> tuple[dict, str | None]:
  """OpenAI's released files are TorchScript archives, which keep each module's class name (and so the
  activation); open_clip's .bin are plain (maybe wrapped) state dicts, which do not."""
  if _is_torchscript(path):
    if not trust_torchscript and sha256(path) not in OPENAI_RELEASED_SHA256:
      raise ValueError(
          f"{path} is a TorchScript archive (code that runs as it loads) and not one of OpenAI's released CLIP "
          'files (by SHA-256): refused. If you trust its source, load it once with '
          'from_pretrained(path, trust_torchscript=True) and save_openai() it as safetensors')
    archive = torch.jit.load(path, map_location='cpu')
    names = {m.original_name for name, m in archive.named_modules() if name.endswith('mlp.gelu')}
    if len(names) > 1 or not names <= _TORCH_ACTIVATIONS.keys():
      raise ValueError(f'{path}: TorchScript MLP activation modules {sorted(names)}; expected one of '
                       f'{sorted(_TORCH_ACTIVATIONS)} throughout')
    return archive.state_dict(), _TORCH_ACTIVATIONS[names.pop()] if names else None  # none: not a CLIP (_clean)
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pickle, zip and torch errors alike: name the file, in one line
    reason = re.search(r'WeightsUnpickler error: ([^\n]*)', str(e))
    detail = (reason.group(1) if reason else str(e).strip().split('\n')[0]).split('. ')[0]  # not torch's advice
    raise ValueError(f'{path} is not a PyTorch checkpoint of tensors (torch.load(weights_only=True) refused it: '
                     f'{e.__class__.__name__}: {detail})') from None
  if not isinstance(state, dict):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state dict')
  return state.get('state_dict', state), None


def _config_file_activation(path: str) -> tuple[str, str | None]:
  """(open_clip_config.json beside the weights, the activation its model_cfg.quick_gelu gives or None)."""
  file = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), OPEN_CLIP_CONFIG)
  if not os.path.isfile(file):
    return file, None
  try:
    with open(file) as f:
      model_cfg = json.load(f).get('model_cfg')
  except (json.JSONDecodeError, AttributeError) as e:
    raise ValueError(f'{file} is not an open_clip config (a JSON object with "model_cfg"): {e}') from e
  if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get('quick_gelu', False), bool):
    raise ValueError(f'{file}: expected "model_cfg": {{..., "quick_gelu": true or false}}, as open_clip writes')
  return file, 'quick_gelu' if model_cfg.get('quick_gelu', False) else 'gelu'  # open_clip's default: GELU


def activation(path: str, declared: str | None, requested: str | None) -> str:
  """The transformer MLP activation of the checkpoint at ``path``: what the file declares (``declared``, from
  ``read_state_dict``), what an ``open_clip_config.json`` beside it says, and what the caller asks for must
  agree; at least one must say."""
  if requested is not None and requested not in ACTIVATIONS:
    raise ValueError(f'activation {requested!r} is not one of {ACTIVATIONS}')
  config_file, configured = _config_file_activation(path)
  said = {f'{path} (its TorchScript modules)': declared, config_file: configured, 'the activation argument': requested}
  said = {source: act for source, act in said.items() if act is not None}
  if len(set(said.values())) > 1:
    raise ValueError('conflicting activations: ' + '; '.join(f'{act} from {source}' for source, act in said.items()))
  if not said:
    raise ValueError(
        f"{path} does not say which activation its transformer MLPs use (OpenAI's models and open_clip's "
        "'-quickgelu' ones use quick_gelu, open_clip's others gelu; the wrong one changes every embedding). "
        "Say which: from_pretrained(..., activation='quick_gelu' or 'gelu'), or, for the training and eval CLIs, "
        f'put open_clip\'s {OPEN_CLIP_CONFIG} beside it, e.g. {{"model_cfg": {{"quick_gelu": true}}}}')
  return next(iter(said.values()))


def config_from_shapes(shapes: dict[str, tuple[int, ...]], act: str) -> CLIPConfig:
  """Tower shapes read off the tensor shapes, as OpenAI's ``build_model`` does (heads = width / 64), with the
  MLP activation ``act`` (see ``activation``); text is pooled at argmax(ids), as OpenAI's encode_text does."""
  def count(prefix):
    return len({k[len(prefix):].split('.')[0] for k in shapes if k.startswith(prefix)})

  text_width = shapes['ln_final.weight'][0]
  text = TextConfig(vocab_size=shapes['token_embedding.weight'][0],
                    context_length=shapes['positional_embedding'][0], width=text_width,
                    layers=count('transformer.resblocks.'), heads=text_width // 64, mlp_dim=4 * text_width,
                    act=act, eos_token_id=LEGACY_EOS_TOKEN_ID)
  embed_dim = shapes['text_projection'][1]
  if 'visual.proj' in shapes:
    width, _, patch, _ = shapes['visual.conv1.weight']
    grid = round((shapes['visual.positional_embedding'][0] - 1) ** 0.5)
    vision = VisionConfig(image_size=patch * grid, patch_size=patch, width=width,
                          layers=count('visual.transformer.resblocks.'), heads=width // 64, mlp_dim=4 * width,
                          act=act)
  else:
    width = shapes['visual.layer1.0.conv1.weight'][0]
    grid = round((shapes['visual.attnpool.positional_embedding'][0] - 1) ** 0.5)
    vision = VisionConfig(image_size=32 * grid, width=width, heads=width * 32 // 64,
                          stage_blocks=tuple(count(f'visual.layer{i}.') for i in range(1, 5)))
  return CLIPConfig(vision=vision, text=text, embed_dim=embed_dim)


def format_mismatches(cfg: CLIPConfig) -> list[str]:
  """What OpenAI's format cannot express about ``cfg``: its loaders infer heads (width / 64), MLP width
  (4x) and LayerNorm epsilon (1e-5) instead of storing them; open_clip's config names one activation for
  both towers, quick_gelu or gelu."""
  problems = []
  towers = [('text', cfg.text)] + ([] if cfg.vision.is_resnet else [('vision', cfg.vision)])
  for name, tower in towers:
    if tower.heads != tower.width // 64:
      problems.append(f'{name} heads {tower.heads} != width {tower.width} / 64')
    if tower.mlp_dim != 4 * tower.width:
      problems.append(f'{name} mlp_dim {tower.mlp_dim} != 4 x width {tower.width}')
    if tower.act not in ACTIVATIONS or tower.act != cfg.text.act:
      problems.append(f'{name} act {tower.act!r}: the format has one activation for both towers, one of {ACTIVATIONS}')
  if cfg.vision.is_resnet and cfg.vision.heads != cfg.vision.width * 32 // 64:
    problems.append(f'ResNet attention-pool heads {cfg.vision.heads} != width {cfg.vision.width} x 32 / 64')
  if cfg.layer_norm_eps != 1e-5:
    problems.append(f'layer_norm_eps {cfg.layer_norm_eps} != 1e-5')
  return problems


def open_clip_config(cfg: CLIPConfig) -> dict:
  """``cfg`` as open_clip's ``open_clip_config.json``: the shapes of its model configs, the activation
  (``quick_gelu``) and OpenAI's pixel mean and std (the 'clip' pixel normalization)."""
  v, t = cfg.vision, cfg.text
  if v.is_resnet:
    vision = dict(image_size=v.image_size, layers=list(v.stage_blocks), width=v.width, patch_size=None)
  else:
    vision = dict(image_size=v.image_size, layers=v.layers, width=v.width, patch_size=v.patch_size)
  text = dict(context_length=t.context_length, vocab_size=t.vocab_size, width=t.width, heads=t.heads, layers=t.layers)
  model_cfg = dict(embed_dim=cfg.embed_dim, quick_gelu=t.act == 'quick_gelu', vision_cfg=vision, text_cfg=text)
  return {'model_cfg': model_cfg,
          'preprocess_cfg': dict(mean=CLIP_MEAN.tolist(), std=CLIP_STD.tolist())}


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
