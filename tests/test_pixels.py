"""Drawings cross processes and reach the devices as uint8 grey; the jitted train step and eval embedding
normalise them. Reference: the float normalisation the pipeline used to ship (float32 RGB), recomputed here
in NumPy float64 from the same uint8 pixels with the published statistics written out again."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from designclip_jax import sharding
from designclip_jax.data import images as image_ops
from designclip_jax.eval.embed import embed_images
from designclip_jax.models import CLIP, preset
from designclip_jax.train import step as train_step
from designclip_jax.train.config import base_config
from tests.test_sharding import _batch, _max_abs, _spec

# OpenAI CLIP's preprocessing (clip/clip.py, _transform: Normalize(mean, std)); 'sketch' maps white to 0, ink to -2
REFERENCE_STATS = {'clip': ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
                   'sketch': ((1.0, 1.0, 1.0), (0.5, 0.5, 0.5))}


def reference_pixels(gray, normalization):
  """uint8 (..., 1) -> float32 (..., 3), computed in float64."""
  mean, std = (np.array(v, np.float64) for v in REFERENCE_STATS[normalization])
  return ((np.asarray(gray, np.float64) / 255.0 - mean) / std).astype(np.float32)


def _drawings(n, size, seed=0):
  """Line-art-like uint8 drawings: white paper, some ink, a few grey (resampled) edge pixels."""
  rng = np.random.default_rng(seed)
  return rng.choice(np.array([255, 0, 128, 37], np.uint8), size=(n, size, size, 1), p=[0.8, 0.14, 0.04, 0.02])


@pytest.mark.parametrize('normalization', image_ops.PIXEL_NORMALIZATIONS)
def test_normalize_on_host_and_device_equals_the_float64_reference(normalization):
  every_value = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
  expected = reference_pixels(every_value, normalization)
  assert expected.shape == (16, 16, 3)
  np.testing.assert_allclose(image_ops.normalize(every_value, normalization), expected, rtol=0, atol=1e-6)
  on_device = jax.jit(lambda x: image_ops.normalize(x, normalization))(jnp.asarray(every_value))
  np.testing.assert_allclose(np.asarray(on_device), expected, rtol=0, atol=1e-6)


def test_normalize_refuses_what_the_pipeline_does_not_ship():
  with pytest.raises(TypeError, match=r'uint8 with one grey channel last.*float32 \(2, 4, 4, 3\)'):
    image_ops.normalize(np.zeros((2, 4, 4, 3), np.float32), 'clip')
  with pytest.raises(ValueError, match="pixel normalization 'imagenet' is not one of"):
    image_ops.normalize(np.zeros((2, 4, 4, 1), np.uint8), 'imagenet')


@pytest.mark.parametrize('normalization', image_ops.PIXEL_NORMALIZATIONS)
def test_embedding_uint8_drawings_equals_the_tower_on_float_pixels(normalization):
  """eval.embed (search embeds through it): PNG bytes -> uint8 on the devices -> normalised in the jitted tower."""
  clip = CLIP(preset('tiny', vision_image_size=32, vision_layers=1, text_layers=1, text_vocab_size=64,
                     text_context_length=8), rngs=nnx.Rngs(0))
  drawings = _drawings(10, 32)
  pngs = [image_ops.encode_png(d[..., 0]) for d in drawings]
  got = embed_images(clip, pngs, batch_size=8, progress=False, normalization=normalization)  # 2 batches, padded
  expected = np.asarray(clip.encode_image(jnp.asarray(reference_pixels(drawings, normalization))))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  other = 'sketch' if normalization == 'clip' else 'clip'  # the normalisation matters: the check can fail
  assert not np.allclose(embed_images(clip, pngs, batch_size=8, progress=False, normalization=other), expected,
                         atol=1e-3)


def test_train_step_on_uint8_drawings_equals_the_step_on_prenormalised_floats(normalization='clip'):
  """The jitted step (uint8 in, normalised inside) against train_step fed the float32 RGB batch the pipeline
  used to ship: the same loss terms and updated parameters. (One normalisation: two step compiles each; the
  other one's arithmetic is checked above.)"""
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  cfg = base_config().train
  cfg.learning_rate, cfg.warmup_steps, cfg.steps = 1e-3, 0, 10
  lambdas = (1.0, 0.1, 0.2)
  abstract_model, abstract_opt, model_state, opt_state = train_step.init_state(
      _spec().build, train_step.make_optimizer(cfg), mesh)
  step = train_step.jit_train_step(abstract_model, abstract_opt, mesh, lambdas, pixel_normalization=normalization)

  @jax.jit
  def float_step(model_state, opt_state, batch):
    model, optimizer = nnx.merge(step.model_graph, model_state), nnx.merge(step.opt_graph, opt_state)
    with sharding.activation_sharding(mesh):
      metrics = train_step.train_step(model, optimizer, batch, lambdas=lambdas, mesh=mesh)
    return nnx.state(model), metrics

  batch = {**_batch(), 'image': _drawings(16, 32, seed=1), 'view': _drawings(16, 32, seed=2)}
  floats = {**batch, 'image': reference_pixels(batch['image'], normalization),
            'view': reference_pixels(batch['view'], normalization)}
  initial = jax.device_get(nnx.to_pure_dict(model_state))
  ref_model, ref_metrics = jax.device_get(float_step(model_state, opt_state, floats))  # before donation
  got_model, _, got_metrics = jax.device_get(step(model_state, opt_state, sharding.host_local_to_global(batch, mesh)))
  for k in ('loss', 'cacls', 'cacl', 'mvcl', 'grad_norm'):
    assert float(got_metrics[k]) == pytest.approx(float(ref_metrics[k]), rel=1e-5), k
  got, ref = nnx.to_pure_dict(got_model), nnx.to_pure_dict(ref_model)
  assert _max_abs(got, ref) <= 1e-5
  assert _max_abs(ref, initial) > 1e-4  # the step moved the parameters (lr 1e-3): equal is not both unchanged
