"""CLIP checkpoints <-> NNX CLIP models: Hugging Face directories (config.json + model.safetensors) and
OpenAI-format state dicts (``openai_format``: OpenAI's .pt files, open_clip's safetensors; the only
format the ResNet towers have).

One table of name rules serves both directions. Reading needs numpy + safetensors only (no torch);
``transformers`` is used for its CLIPConfig (defaults, validation) and tokenizer, never for weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from designclip_jax import paths
from designclip_jax.data.tokenizer import TOKENIZER_FILES
from designclip_jax.weights import openai_format
from designclip_jax.models.clip import CLIP
from designclip_jax.models.config import CLIPConfig, TextConfig, VisionConfig
from designclip_jax.models.text import LEGACY_EOS_TOKEN_ID

WEIGHTS_NAME = 'model.safetensors'
WEIGHTS_INDEX_NAME = 'model.safetensors.index.json'
_IGNORED_HF_KEYS = re.compile(r'.*position_ids$')  # non-persistent buffers older exports still carry

_identity: Callable = lambda w: w
_transpose: Callable = lambda w: w.T

# (our flat name, HF flat name, ours -> HF, HF -> ours); the first rule whose pattern matches wins.
_HWIO_TO_OIHW: Callable = lambda w: w.transpose(3, 2, 0, 1)
_OIHW_TO_HWIO: Callable = lambda w: w.transpose(2, 3, 1, 0)
_RULES: list[tuple[str, str, Callable, Callable]] = [
    (r'(.*)\.patch_embedding$', r'\1.patch_embedding.weight', _HWIO_TO_OIHW, _OIHW_TO_HWIO),
    (r'(.*\.(?:conv\d|downsample\.0))\.kernel$', r'\1.weight', _HWIO_TO_OIHW, _OIHW_TO_HWIO),  # ResNet convs
    (r'(.*)\.(mean|var)$', r'\1.running_\2', _identity, _identity),  # ResNet BatchNorm statistics
    (r'(.*)\.class_embedding$', r'\1.class_embedding', _identity, _identity),
    (r'(.*\.(?:token|position)_embedding)$', r'\1.weight', _identity, _identity),
    (r'(.*)\.kernel$', r'\1.weight', _transpose, _transpose),  # torch Linear stores (out, in)
    (r'(.*)\.scale$', r'\1.weight', _identity, _identity),      # LayerNorm / BatchNorm gain
    (r'(.*)$', r'\1', _identity, _identity),                    # biases, logit_scale
]


def _hf_name(ours: str) -> tuple[str, Callable, Callable]:
  for pattern, template, to_hf, from_hf in _RULES:
    if re.fullmatch(pattern, ours):
      return re.sub(pattern, template, ours), to_hf, from_hf
  raise AssertionError(f'no rule for {ours}')  # the catch-all rule makes this unreachable


def _flat_params(model_or_abstract: CLIP) -> dict[str, jax.Array]:
  pure = nnx.to_pure_dict(nnx.state(model_or_abstract, nnx.Any(nnx.Param, nnx.BatchStat)))
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(pure)[0]:
    flat['.'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)] = leaf
  return flat


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    node = tree
    *parents, leaf = name.split('.')
    for part in parents:
      node = node.setdefault(int(part) if part.isdigit() else part, {})
    node[leaf] = value
  return tree


# ----------------------------------------------------------------------------- configs

def config_from_hf(hf) -> CLIPConfig:
  """Our CLIPConfig from a ``transformers.CLIPConfig``."""
  t, v = hf.text_config, hf.vision_config
  if t.layer_norm_eps != v.layer_norm_eps:
    raise ValueError(f'text and vision layer_norm_eps differ ({t.layer_norm_eps} vs {v.layer_norm_eps}); '
                     'this model uses one epsilon for both towers')
  return CLIPConfig(
      vision=VisionConfig(image_size=v.image_size, patch_size=v.patch_size, width=v.hidden_size,
                          layers=v.num_hidden_layers, heads=v.num_attention_heads, mlp_dim=v.intermediate_size,
                          act=v.hidden_act, channels=v.num_channels),
      text=TextConfig(vocab_size=t.vocab_size, context_length=t.max_position_embeddings, width=t.hidden_size,
                      layers=t.num_hidden_layers, heads=t.num_attention_heads, mlp_dim=t.intermediate_size,
                      act=t.hidden_act, eos_token_id=t.eos_token_id),
      embed_dim=hf.projection_dim, layer_norm_eps=v.layer_norm_eps,
      logit_scale_init=hf.logit_scale_init_value)


def config_to_hf(cfg: CLIPConfig):
  from transformers import CLIPConfig as HFCLIPConfig  # pylint: disable=import-outside-toplevel
  t, v = cfg.text, cfg.vision
  return HFCLIPConfig(
      text_config=dict(vocab_size=t.vocab_size, hidden_size=t.width, intermediate_size=t.mlp_dim,
                       num_hidden_layers=t.layers, num_attention_heads=t.heads,
                       max_position_embeddings=t.context_length, hidden_act=t.act,
                       layer_norm_eps=cfg.layer_norm_eps, eos_token_id=t.eos_token_id, pad_token_id=t.eos_token_id,
                       bos_token_id=49406 if t.vocab_size > 49406 else None,  # OpenAI's BOS, if in vocab
                       projection_dim=cfg.embed_dim),
      vision_config=dict(hidden_size=v.width, intermediate_size=v.mlp_dim, num_hidden_layers=v.layers,
                         num_attention_heads=v.heads, num_channels=v.channels, image_size=v.image_size,
                         patch_size=v.patch_size, hidden_act=v.act, layer_norm_eps=cfg.layer_norm_eps,
                         projection_dim=cfg.embed_dim),
      projection_dim=cfg.embed_dim, logit_scale_init_value=cfg.logit_scale_init)


def load_config(path: str, activation: str | None = None, trust_torchscript: bool = False) -> CLIPConfig:
  """Tower shapes of an HF directory (config.json) or an OpenAI-format checkpoint (read off its tensors).
  ``activation`` ('quick_gelu' or 'gelu') is required for an OpenAI-format file that does not say which
  (``openai_format.activation``); where the checkpoint says, it must agree. ``trust_torchscript``: see
  ``openai_format.read_state_dict``."""
  if paths.is_url(path):
    with local_checkpoint(path) as local:
      return load_config(local, activation, trust_torchscript)
  if openai_format.is_openai_checkpoint(path):
    shapes, declared = openai_format.read_shapes(path, trust_torchscript)
    return openai_format.config_from_shapes(shapes, openai_format.activation(path, declared, activation))
  config_file = os.path.join(path, 'config.json')
  if not os.path.isfile(config_file):
    raise FileNotFoundError(f'{config_file} not found: expected a Hugging Face CLIP directory '
                            '(config.json + model.safetensors) or an OpenAI-format checkpoint '
                            f'(a .pt/.bin/.safetensors file, or a directory with {openai_format.OPENAI_FILES[0]})')
  with open(config_file) as f:
    raw = json.load(f)
  if raw.get('model_type') != 'clip':
    raise ValueError(f'{config_file} describes model_type={raw.get("model_type")!r}, not a CLIP model '
                     "(model_type 'clip')")
  from transformers import CLIPConfig as HFCLIPConfig  # pylint: disable=import-outside-toplevel
  config = config_from_hf(HFCLIPConfig.from_pretrained(path))
  if activation is not None and {config.text.act, config.vision.act} != {activation}:
    raise ValueError(f'{config_file} says hidden_act {config.text.act!r} (text) / {config.vision.act!r} (vision); '
                     f'activation={activation!r} contradicts it')
  return config


# ----------------------------------------------------------------------------- weights

def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """All tensors of an HF directory's model.safetensors (or its sharded index), as numpy arrays (bfloat16 too)."""
  single, index = os.path.join(path, WEIGHTS_NAME), os.path.join(path, WEIGHTS_INDEX_NAME)
  if os.path.isfile(single):
    return openai_format.load_safetensors(single)
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    tensors = {}
    for shard in shards:
      tensors.update(openai_format.load_safetensors(os.path.join(path, shard)))
    return tensors
  raise FileNotFoundError(f'no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME}) in {path}; PyTorch .bin '
                          'checkpoints must first be re-saved as safetensors')


@contextlib.contextmanager
def local_checkpoint(path: str) -> Iterator[str]:
  """``path`` itself when local; for a bucket URL (gs://…), a temporary local copy of the files a checkpoint is
  read from (weights, config, tokenizer), since safetensors, torch and transformers read local files only. A
  directory (HF or open_clip) stays a directory; a checkpoint file is copied with the files beside it."""
  if not paths.is_url(path):
    yield path
    return
  from etils import epath  # pylint: disable=import-outside-toplevel
  folder, name = (path, None) if epath.Path(path).is_dir() else (os.path.dirname(path), os.path.basename(path))
  if name is None and not epath.Path(path, 'config.json').exists() and not any(
      epath.Path(path, f).exists() for f in openai_format.OPENAI_FILES):
    raise FileNotFoundError(f'{path} holds no checkpoint (config.json or {openai_format.OPENAI_FILES[0]})')
  if name is not None and not epath.Path(path).is_file():
    raise FileNotFoundError(f'checkpoint {path!r} does not exist')
  index = epath.Path(folder, WEIGHTS_INDEX_NAME)
  shards = sorted(set(json.loads(index.read_text())['weight_map'].values())) if name is None and index.exists() else []
  names = ([name] if name else ['config.json', WEIGHTS_NAME, WEIGHTS_INDEX_NAME, *shards, *openai_format.OPENAI_FILES])
  with paths.local_folder(folder, names + [openai_format.OPEN_CLIP_CONFIG, *TOKENIZER_FILES]) as local:
    yield os.path.join(local, name) if name else local


def read_checkpoint(path: str, activation: str | None = None,
                    trust_torchscript: bool = False) -> tuple[CLIPConfig, dict[str, np.ndarray]]:
  """A checkpoint's config and its tensors under HF-style names, whichever format it is in (weights read
  once); ``activation`` and ``trust_torchscript`` as in ``load_config``."""
  if paths.is_url(path):
    with local_checkpoint(path) as local:
      return read_checkpoint(local, activation, trust_torchscript)
  if openai_format.is_openai_checkpoint(path):
    state, declared = openai_format.read_state_dict(path, trust_torchscript)
    act = openai_format.activation(path, declared, activation)
    config = openai_format.config_from_shapes({k: v.shape for k, v in state.items()}, act)
    return config, openai_format.to_hf_names(state)
  return load_config(path, activation), read_safetensors(path)


def hf_to_params(tensors: dict[str, np.ndarray], abstract: CLIP) -> dict:
  """HF tensors -> nested pure dict matching ``abstract``; errors name the offending tensor."""
  ours = {}
  expected = _flat_params(abstract)
  unused = {k for k in tensors if not _IGNORED_HF_KEYS.fullmatch(k)}
  for name, target in expected.items():
    hf_name, _, from_hf = _hf_name(name)
    if hf_name not in tensors:
      raise KeyError(f'checkpoint is missing tensor {hf_name!r} (for {name})')
    value = from_hf(np.asarray(tensors[hf_name], dtype=np.float32))
    if value.shape != tuple(target.shape):
      raise ValueError(f'tensor {hf_name!r} has shape {tuple(tensors[hf_name].shape)}; the config expects '
                       f'{tuple(target.shape)} (after conversion)')
    ours[name] = value
    unused.discard(hf_name)
  if unused:
    raise ValueError(f'checkpoint holds tensors this model does not use: {sorted(unused)[:10]}')
  return _unflatten(ours)


def params_to_hf(model: CLIP) -> dict[str, np.ndarray]:
  out = {}
  for name, value in _flat_params(model).items():
    hf_name, to_hf, _ = _hf_name(name)
    out[hf_name] = np.array(to_hf(np.asarray(jax.device_get(value), dtype=np.float32)), order="C")
  return out


# ----------------------------------------------------------------------------- public API

def pool_at_tokenizer_eos(config: CLIPConfig, tokenizer) -> CLIPConfig:
  """``config`` with text pooled at ``tokenizer``'s EOS where it pools at argmax(ids) (OpenAI checkpoints,
  legacy HF configs). For CLIP's own tokenizer, whose EOS is the largest id, that is the same token; for
  any other tokenizer it is the right one. Also checks that the tokenizer's ids fit the embedding."""
  if tokenizer.vocab_size > config.text.vocab_size:
    raise ValueError(f'the tokenizer has {tokenizer.vocab_size} tokens but the checkpoint embeds only '
                     f'{config.text.vocab_size}: wrong tokenizer files')
  if config.text.eos_token_id == LEGACY_EOS_TOKEN_ID:
    return config.replace(text_eos_token_id=tokenizer.eos_token_id)
  return config


def from_pretrained(path: str, *, dtype=jnp.float32, remat: bool = False, tokenizer=None,
                    activation: str | None = None, trust_torchscript: bool = False) -> CLIP:
  """Load an HF CLIP directory or an OpenAI-format checkpoint into an NNX ``CLIP`` (float32 params from any
  stored dtype, ``dtype`` compute). With ``tokenizer``, argmax text pooling becomes pooling at its EOS
  (``pool_at_tokenizer_eos``); without, the checkpoint's own rule is kept. ``activation`` ('quick_gelu' or
  'gelu') is required for an OpenAI-format file that does not say which (a plain state dict without open_clip's
  config beside it); where the checkpoint says, it must agree. ``trust_torchscript=True`` loads a TorchScript
  archive that is not one of OpenAI's released files, running its code (``openai_format.read_state_dict``)."""
  path = os.fspath(path)
  if not paths.is_url(path) and not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint {path!r} does not exist')
  config, tensors = read_checkpoint(path, activation, trust_torchscript)
  if tokenizer is not None:
    config = pool_at_tokenizer_eos(config, tokenizer)
  abstract = nnx.eval_shape(lambda: CLIP(config, dtype=dtype, remat=remat, rngs=nnx.Rngs(0)))
  params = hf_to_params(tensors, abstract)
  graphdef, state = nnx.split(abstract)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, state)


def save_pretrained(model: CLIP, path: str, tokenizer=None) -> None:
  """Write ``model`` as a directory that ``transformers.CLIPModel.from_pretrained`` loads."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  if model.config.vision.is_resnet:
    raise ValueError('transformers has no CLIP ResNet class: export a ResNet model with save_openai()')
  os.makedirs(path, exist_ok=True)
  hf_config = config_to_hf(model.config)
  hf_config.architectures = ['CLIPModel']
  hf_config.save_pretrained(path)
  save_file(params_to_hf(model), os.path.join(path, WEIGHTS_NAME), metadata={'format': 'pt'})
  if tokenizer is not None:
    tokenizer.save(path)


def save_openai(model: CLIP, path: str, tokenizer=None) -> None:
  """Write ``model`` as an OpenAI-format state dict (``<path>/open_clip_model.safetensors``, the names of
  OpenAI's clip/model.py, which open_clip loads) with open_clip's ``open_clip_config.json`` beside it (the
  activation; the tower shapes are also implied by the tensors). Text is pooled at argmax(ids) on reload,
  which is the EOS only with CLIP's tokenizer (EOS = the largest id)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  problems = openai_format.format_mismatches(model.config)
  if problems:
    raise ValueError('the OpenAI format cannot describe this model (its loaders would rebuild a different '
                     'one): ' + '; '.join(problems) + '. Use save_pretrained (HF format) for it.')
  os.makedirs(path, exist_ok=True)
  state = openai_format.from_hf_names(params_to_hf(model))
  save_file({k: np.array(v, order="C") for k, v in state.items()},  # keeps 0-d tensors 0-d (logit_scale)
            os.path.join(path, openai_format.OPENAI_FILES[0]))
  with open(os.path.join(path, openai_format.OPEN_CLIP_CONFIG), 'w') as f:
    json.dump(openai_format.open_clip_config(model.config), f, indent=1)
  if tokenizer is not None:
    tokenizer.save(path)
