"""Choices that must change cost, never values: remat per block on both tower kinds; image and view in one
vision-tower batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from designclip_jax.models import CLIP, preset

TOWERS = {
    'vit': preset('tiny', vision_image_size=32, vision_layers=2, text_layers=2, text_vocab_size=64,
                  text_context_length=8),
    'resnet': preset('tiny', vision_image_size=32, vision_width=8, vision_heads=4, vision_stage_blocks=(1, 2, 1, 1),
                     text_layers=2, text_vocab_size=64, text_context_length=8),
}


def _grads(cfg, remat):
  model = CLIP(cfg, remat=remat, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  pixels = jnp.asarray(rng.normal(size=(4, 32, 32, 3)), jnp.float32)
  ids = jnp.asarray(rng.integers(2, 60, (4, 8)), jnp.int32).at[:, 5].set(1)

  def loss(m):
    logits = m(pixels, ids)
    return jnp.mean(jax.nn.log_softmax(logits, axis=-1).diagonal())

  return nnx.to_pure_dict(nnx.jit(nnx.grad(loss))(model))


# ResNet's compile is 17 s of the suite's CPU: slow (the ViT case keeps remat in the default run)
@pytest.mark.parametrize('tower', [pytest.param(t, marks=pytest.mark.slow) if t == 'resnet' else t for t in sorted(TOWERS)])
def test_remat_leaves_gradients_unchanged(tower):
  plain, rematerialised = _grads(TOWERS[tower], False), _grads(TOWERS[tower], True)
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(plain))
  assert scale > 0
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(rematerialised), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6 * scale)


def test_designclip_views_equal_separate_tower_calls():
  """Image and view share one vision-tower batch (interleaved so no row moves between devices): each
  embedding, and the class logits, must be what a tower call on that input alone gives."""
  from designclip_jax.models.designclip import DesignCLIP
  cfg = TOWERS['vit'].replace(vision_layers=1, text_layers=1)
  model = DesignCLIP(CLIP(cfg, rngs=nnx.Rngs(0)), 5, fusion_width=32, rngs=nnx.Rngs(1))
  rng = np.random.default_rng(0)
  image, view = (jnp.asarray(rng.normal(size=(3, 32, 32, 3)), jnp.float32) for _ in range(2))
  ids = jnp.asarray(rng.integers(2, 60, (3, 8)), jnp.int32).at[:, 5].set(1)

  @nnx.jit  # one program: op-by-op dispatch is slow
  def run(model):
    return (model(image, view, ids), model(image, view, ids, with_view=False), model.clip.encode_image(image),
            model.clip.encode_image(view))

  both, alone, image_alone, view_alone = run(model)
  np.testing.assert_allclose(both['image'], image_alone, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(both['view'], view_alone, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(both['class_logits'], alone['class_logits'], rtol=1e-5, atol=1e-6)
  assert not np.allclose(both['image'], both['view'])
