"""Parity with transformers' PyTorch CLIP, export round trip, and clear errors on bad checkpoints."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

import designclip_jax
from tests.hf_reference import make_hf_clip, random_text_ids, torch_forward

CONFIGS = {
    'quick_gelu-eos': dict(act='quick_gelu', eos_token_id=97),
    'gelu-eos': dict(act='gelu', eos_token_id=97, text_heads=2, vision_heads=6, text_layers=3, vision_layers=1),
    'quick_gelu-legacy_argmax': dict(act='quick_gelu', eos_token_id=2, vocab_size=60),
    'gelu-3heads-odd': dict(act='gelu', eos_token_id=97, text_heads=8, vision_heads=3, vision_layers=5,
                            image_size=48, patch_size=16),
}


def _rel_err(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _inputs(cfg_kwargs, seed=0):
  rng = np.random.default_rng(seed)
  size = cfg_kwargs.get('image_size', 32)
  pixels = rng.normal(size=(3, size, size, 3)).astype(np.float32)
  vocab = cfg_kwargs.get('vocab_size', 99)
  eos = cfg_kwargs['eos_token_id']
  if eos == 2:  # legacy pooling takes argmax(ids): the EOS must be the largest id in each row
    ids = random_text_ids(rng, 4, 16, vocab - 1, 0)
    for row in ids:
      row[row == 0] = 1
      row[0] = 0
      end = rng.integers(2, 15)
      row[end] = vocab - 1
      row[end + 1:] = 1
  else:
    ids = random_text_ids(rng, 4, 16, vocab, eos)
  return pixels, ids


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_parity_with_transformers(tmp_path, name):
  kwargs = CONFIGS[name]
  hf = make_hf_clip(tmp_path, **kwargs)
  model = designclip_jax.from_pretrained(tmp_path)
  pixels, ids = _inputs(kwargs)
  ref_img, ref_txt, ref_logits = torch_forward(hf, pixels, ids)
  img = np.asarray(model.encode_image(jnp.asarray(pixels)))
  txt = np.asarray(model.encode_text(jnp.asarray(ids)))
  logits = np.asarray(model(jnp.asarray(pixels), jnp.asarray(ids)))
  assert _rel_err(img, ref_img) <= 1e-5
  assert _rel_err(txt, ref_txt) <= 1e-5
  assert _rel_err(logits, ref_logits) <= 1e-5


def test_save_pretrained_round_trip_loads_in_transformers(tmp_path):
  from transformers import CLIPModel
  kwargs = CONFIGS['gelu-eos']
  make_hf_clip(tmp_path / 'src', **kwargs)
  model = designclip_jax.from_pretrained(tmp_path / 'src')
  # perturb so the export cannot pass by copying the source files
  model.logit_scale[...] = model.logit_scale[...] + 0.25
  designclip_jax.save_pretrained(model, tmp_path / 'out')
  reloaded, info = CLIPModel.from_pretrained(tmp_path / 'out', output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'] and not info['mismatched_keys']
  pixels, ids = _inputs(kwargs, seed=1)
  _, _, ref_logits = torch_forward(reloaded.eval(), pixels, ids)
  logits = np.asarray(model(jnp.asarray(pixels), jnp.asarray(ids)))
  assert _rel_err(logits, ref_logits) <= 1e-5
  again = designclip_jax.from_pretrained(tmp_path / 'out')
  np.testing.assert_array_equal(np.asarray(again(jnp.asarray(pixels), jnp.asarray(ids))), logits)


def test_bfloat16_compute_stays_close_to_float32(tmp_path):
  kwargs = CONFIGS['quick_gelu-eos']
  make_hf_clip(tmp_path, **kwargs)
  f32 = designclip_jax.from_pretrained(tmp_path)
  bf16 = designclip_jax.from_pretrained(tmp_path, dtype=jnp.bfloat16)
  pixels, ids = _inputs(kwargs)
  for enc, x in ((lambda m: m.encode_image, pixels), (lambda m: m.encode_text, ids)):
    a = np.asarray(enc(f32)(jnp.asarray(x)))
    b = np.asarray(enc(bf16)(jnp.asarray(x)))
    assert b.dtype == np.float32
    # bf16 has 8 mantissa bits (~4e-3 relative); a few layers of accumulation stay within ~3e-2
    assert _rel_err(b, a) < 3e-2
    cos = np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert np.all(cos > 0.999)


def test_bfloat16_checkpoint_loads_as_torch_computes_it(tmp_path):
  """A checkpoint saved in bfloat16 (sharded, as large exports are): the weights arrive exactly (outputs equal
  torch's model upcast from the same bfloat16 weights) and stay within bfloat16 rounding of the float32 model."""
  from safetensors import safe_open
  kwargs = CONFIGS['gelu-eos']
  hf = make_hf_clip(tmp_path / 'f32', **kwargs)
  pixels, ids = _inputs(kwargs)
  f32_outputs = torch_forward(hf, pixels, ids)
  hf.to(torch.bfloat16).save_pretrained(tmp_path / 'bf16', max_shard_size='40KB')
  shards = sorted((tmp_path / 'bf16').glob('model-*.safetensors'))
  assert len(shards) > 1 and (tmp_path / 'bf16' / 'model.safetensors.index.json').is_file()
  with safe_open(shards[0], framework='pt') as f:
    assert {f.get_slice(k).get_dtype() for k in f.keys()} == {'BF16'}
  model = designclip_jax.from_pretrained(tmp_path / 'bf16')
  ours = (model.encode_image(jnp.asarray(pixels)), model.encode_text(jnp.asarray(ids)),
          model(jnp.asarray(pixels), jnp.asarray(ids)))
  for mine, upcast, f32 in zip(ours, torch_forward(hf.float(), pixels, ids), f32_outputs, strict=True):
    assert _rel_err(np.asarray(mine), upcast) <= 1e-5
    assert _rel_err(np.asarray(mine), f32) < 3e-2  # bf16 weights: ~4e-3 per weight, a few layers deep


def test_missing_directory_and_files(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    designclip_jax.from_pretrained(tmp_path / 'nope')
  with pytest.raises(FileNotFoundError, match='config.json'):
    designclip_jax.from_pretrained(tmp_path)
  make_hf_clip(tmp_path, **CONFIGS['gelu-eos'])
  os.remove(tmp_path / 'model.safetensors')
  with pytest.raises(FileNotFoundError, match='model.safetensors'):
    designclip_jax.from_pretrained(tmp_path)


def test_non_clip_config_is_refused(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
  with pytest.raises(ValueError, match="not a CLIP model"):
    designclip_jax.from_pretrained(tmp_path)


def test_wrong_tensor_shape_is_named(tmp_path):
  from safetensors.numpy import load_file, save_file
  make_hf_clip(tmp_path, **CONFIGS['gelu-eos'])
  tensors = load_file(tmp_path / 'model.safetensors')
  key = 'text_model.encoder.layers.1.mlp.fc1.weight'
  tensors[key] = tensors[key][:-1]
  save_file(tensors, tmp_path / 'model.safetensors')
  with pytest.raises(ValueError, match=key.replace('.', r'\.')):
    designclip_jax.from_pretrained(tmp_path)
