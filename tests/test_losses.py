"""Each loss against a float64 NumPy re-implementation written independently here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from designclip_jax import losses


def np_infonce(a, b, ids, w, logit_scale, families=None):
  """Symmetric InfoNCE in float64 with explicit loops: duplicates of a row's patent leave its softmax, and with
  ``families`` every other record of its family too."""
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  s = np.exp(logit_scale)
  n = len(a)
  total = 0.0
  for x, y in ((a, b), (b, a)):
    for i in range(n):
      keep = [j for j in range(n)
              if j == i or (ids[j] != ids[i] and (families is None or families[j] != families[i]))]
      logits = np.array([s * x[i] @ y[j] for j in keep])
      m = logits.max()
      lse = m + np.log(np.exp(logits - m).sum())
      total += 0.5 * w[i] * (lse - s * x[i] @ y[i])
  return total / n


def np_weighted_ce(logits, labels, w):
  out = 0.0
  for i in range(len(labels)):
    z = logits[i] - logits[i].max()
    out += w[i] * (np.log(np.exp(z).sum()) - z[labels[i]])
  return out / len(labels)


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  n, d = 12, 7
  ids = np.array([0, 1, 2, 3, 3, 4, 5, 6, 1, 7, 8, 3])  # patents 1 and 3 repeat
  w = rng.uniform(0.2, 3.0, n)
  return rng.normal(size=(n, d)), rng.normal(size=(n, d)), ids, w / w.mean()


# The family of each record of ``batch``: records 0 and 2, 1 and 5, 3 and 8 are continuations of each other.
FAMILY_OF_RECORD = np.array([0, 1, 0, 2, 3, 1, 4, 5, 2])


@pytest.mark.parametrize('logit_scale', [np.log(1 / 0.07), 5.5])  # 5.5 > ln 100: the loss does not clamp
def test_weighted_infonce_matches_numpy(batch, logit_scale):
  a, b, ids, w = batch
  got = losses.weighted_infonce(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(ids),
                                jnp.asarray(w, jnp.float32), jnp.float32(logit_scale))
  assert float(got) == pytest.approx(np_infonce(a, b, ids, w, logit_scale), rel=1e-5)


def test_duplicates_are_not_negatives(batch):
  a, b, ids, w = batch
  unique = np.arange(len(ids))
  masked = np_infonce(a, b, ids, w, 2.0)
  unmasked = np_infonce(a, b, unique, w, 2.0)
  got = float(losses.weighted_infonce(jnp.asarray(a), jnp.asarray(b), jnp.asarray(ids), jnp.asarray(w), 2.0))
  assert masked < unmasked  # removing negatives can only lower the loss
  assert got == pytest.approx(masked, rel=1e-5)


def test_local_rows_against_gathered_columns_sum_to_the_full_loss(batch):
  a, b, ids, w = batch
  a, b, ids, w = (jnp.asarray(x) for x in (a, b, ids, w))
  full = losses.weighted_infonce(a, b, ids, w, 2.0) * len(ids)
  parts = sum(losses.contrastive_sum(a[i:i + 4], b[i:i + 4], a, b, ids[i:i + 4], ids, i, w[i:i + 4], 2.0)
              for i in range(0, 12, 4))
  assert float(parts) == pytest.approx(float(full), rel=1e-6)


def _loss_terms(a, b, records, families, w, logit_scale, mesh, mask_same_family):
  from designclip_jax.train.step import loss_terms
  batch = {'record': jnp.asarray(records, jnp.int32), 'family': jnp.asarray(families, jnp.int32),
           'weight': jnp.asarray(w, jnp.float32)}
  outputs = {'image': jnp.asarray(a, jnp.float32), 'text': jnp.asarray(b, jnp.float32),
             'view': jnp.asarray(b[::-1], jnp.float32), 'class_logits': None}
  return jax.jit(lambda o, b_: loss_terms(o, b_, jnp.float32(logit_scale), (0.0, 1.0, 1.0), mesh, mask_same_family))(
      outputs, batch)


@pytest.mark.parametrize('mesh_shape', [(1, 1), (4, 2)])  # one device; rows split over 8, families across shards
def test_same_family_pairs_leave_the_softmax_when_asked(mesh_shape):
  """loss.mask_same_family: L_CACL and L_MVCL of the train step's loss_terms (one device, and 8 devices with
  each row against the gathered columns) against the float64 reference that removes every other record of a
  row's family from its softmax, as duplicates of its record are removed; off (the paper), only duplicates."""
  from designclip_jax import sharding
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (conftest forces 8 host devices)')
  rng = np.random.default_rng(5)
  n, d = 16, 7
  records = np.array([0, 1, 2, 3, 3, 4, 5, 6, 1, 7, 8, 3, 0, 5, 2, 6])
  families = FAMILY_OF_RECORD[records]
  a, b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  w = rng.uniform(0.2, 3.0, n)
  mesh = sharding.make_mesh(*mesh_shape, devices=jax.devices()[:mesh_shape[0] * mesh_shape[1]])
  w_mean1 = w / w.mean()  # the step normalises the weights to mean 1
  for mask in (True, False):
    terms = _loss_terms(a, b, records, families, w, 2.0, mesh, mask)
    expected_families = families if mask else None
    assert float(terms['cacl']) == pytest.approx(np_infonce(a, b, records, w_mean1, 2.0, expected_families), rel=1e-5)
    assert float(terms['mvcl']) == pytest.approx(np_infonce(a, b[::-1], records, w_mean1, 2.0, expected_families),
                                                 rel=1e-5)
  # the families do take negatives away: the masked loss is lower
  assert np_infonce(a, b, records, w_mean1, 2.0, families) < np_infonce(a, b, records, w_mean1, 2.0) - 1e-3


def test_beta_zero_cacl_only_is_the_standard_clip_loss():
  """β=0 → all weights 1; with unique patents the loss is transformers' clip_loss on the logits."""
  torch = pytest.importorskip('torch')
  from transformers.models.clip.modeling_clip import image_text_contrastive_loss as clip_loss
  rng = np.random.default_rng(1)
  img, txt = rng.normal(size=(9, 5)).astype(np.float32), rng.normal(size=(9, 5)).astype(np.float32)
  scale = np.float32(2.3)
  weights = np.ones(9, np.float32) ** 0.0
  terms = {'cacl': losses.weighted_infonce(img, txt, jnp.arange(9), weights, scale)}
  ours = float(losses.total_loss(terms, (0.0, 1.0, 0.0)))
  n_img = img / np.linalg.norm(img, axis=1, keepdims=True)
  n_txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
  logits_per_text = torch.from_numpy(np.exp(scale) * n_txt @ n_img.T)
  assert ours == pytest.approx(float(clip_loss(logits_per_text)), rel=1e-5)


def test_weighted_cross_entropy_matches_numpy():
  rng = np.random.default_rng(2)
  logits, labels = rng.normal(size=(10, 6)) * 3, rng.integers(0, 6, 10)
  w = rng.uniform(0.5, 2, 10)
  got = losses.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
  assert float(got) == pytest.approx(np_weighted_ce(logits, labels, w), rel=1e-5)


def test_total_loss_combines_terms_with_lambdas():
  terms = {'cacls': 2.0, 'cacl': 3.0, 'mvcl': 5.0}
  assert losses.total_loss(terms, (1.0, 0.1, 0.2)) == pytest.approx(2.0 + 0.3 + 1.0)
  assert losses.total_loss({'cacl': 3.0}, (0.0, 1.0, 0.0)) == pytest.approx(3.0)


def test_class_weights_normalised_over_the_global_batch():
  from designclip_jax import sharding
  from designclip_jax.data.pipeline import class_weights
  from designclip_jax.train.step import loss_terms
  counts = np.array([100, 10, 1, 0])
  w = class_weights(counts, 1.2)
  f = counts[:3] / counts.sum()
  np.testing.assert_allclose(w[:3], f ** -1.2)
  assert w[3] == 0
  np.testing.assert_allclose(class_weights(counts, 0.0)[:3], 1.0)
  # the step normalises the raw weights to mean 1 before the losses see them
  rng = np.random.default_rng(3)
  labels = np.array([0, 0, 1, 2, 0, 1])
  logits = rng.normal(size=(6, 4))
  raw = w[labels]
  batch = {'weight': jnp.asarray(raw, jnp.float32), 'label': jnp.asarray(labels)}
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  got = loss_terms({'class_logits': jnp.asarray(logits, jnp.float32)}, batch, 0.0, (1.0, 0.0, 0.0), mesh)
  assert float(got['cacls']) == pytest.approx(np_weighted_ce(logits, labels, raw / raw.mean()), rel=1e-5)


# ----------------------------------------------------------------------------- the logit scale at its cap

@pytest.mark.parametrize('logit_scale', [np.log(100.0), 5.0])  # OpenAI's stored value, and above the cap
def test_logit_scale_gradient_is_whole_at_and_above_the_cap(batch, logit_scale):
  """d loss / d s against a float64 central difference of the NumPy loss: clamping inside the loss halved
  it at ln 100 and zeroed it above (issue 15.0); the train step clamps the parameter instead."""
  a, b, ids, w = batch
  grad = jax.grad(lambda s: losses.weighted_infonce(a, b, ids, w, s))(jnp.float32(logit_scale))
  h = 1e-6
  expected = (np_infonce(a, b, ids, w, logit_scale + h) - np_infonce(a, b, ids, w, logit_scale - h)) / (2 * h)
  assert abs(expected) > 1.0
  assert float(grad) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize('micro_batches', [1, 2])
def test_logit_scale_clamped_after_the_update_can_come_back_down(micro_batches):
  """From s = ln 100 through the real jitted step (plain, and GradCache accumulation), L_MVCL only: views
  equal to their images make every positive the best match, so the step raises s, and it stays exactly at
  ln 100; views rolled by one make each image its own row's best negative, so the next step lowers s.
  (With the clamp inside the loss, s went above ln 100 and then had no gradient at all.)"""
  from designclip_jax import sharding
  from designclip_jax.train import step as train_step
  from designclip_jax.train.config import base_config
  from tests.test_sharding import PIXELS, _batch, _spec  # the same model and optimizer: the init compiles once
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  cfg = base_config().train
  cfg.learning_rate, cfg.warmup_steps, cfg.steps = 1e-3, 0, 10
  abstract_model, abstract_opt, model_state, opt_state = train_step.init_state(
      _spec().build, train_step.make_optimizer(cfg), mesh)
  cap = np.float32(losses.MAX_LOGIT_SCALE)
  scale = model_state['clip']['logit_scale']
  scale[...] = jax.device_put(cap, scale[...].sharding)
  step = train_step.jit_train_step(abstract_model, abstract_opt, mesh, (0.0, 0.0, 1.0), micro_batches,
                                   pixel_normalization=PIXELS)
  batch = _batch()
  scales, temperatures = [], []
  for view in (batch['image'], np.roll(batch['image'], 1, axis=0)):
    model_state, opt_state, metrics = step(model_state, opt_state,
                                           sharding.host_local_to_global({**batch, 'view': view}, mesh))
    scales.append(float(model_state['clip']['logit_scale'][...]))
    temperatures.append(float(metrics['temperature']))
  assert scales[0] == cap and temperatures[0] == pytest.approx(0.01, rel=1e-6)
  assert scales[1] < cap - 1e-4 and temperatures[1] == pytest.approx(np.exp(-scales[1]), rel=1e-6)


# ----------------------------------------------------------------------------- same-family masking in the train step

_FAMILY = np.array([0, 1, 2, 3, 4, 0, 5, 6, 2, 3, 7, 1, 8, 9, 7, 4])  # tests.test_sharding._batch: rows 3, 9 share a record
_LAMBDAS = (1.0, 0.1, 0.2)


def _step(mesh_shape, mask_same_family, micro_batches=1, with_embeddings=False):
  """One jitted train step on tests.test_sharding's model and batch (with _FAMILY): its metrics, the updated
  parameters and (``with_embeddings``) the embeddings the losses see and the logit scale, before the update."""
  from flax import nnx
  from designclip_jax import sharding
  from designclip_jax.train import step as train_step
  from designclip_jax.train.config import base_config
  from tests.test_sharding import PIXELS, _batch, _spec
  mesh = sharding.make_mesh(*mesh_shape, devices=jax.devices()[:mesh_shape[0] * mesh_shape[1]])
  cfg = base_config().train
  cfg.learning_rate, cfg.warmup_steps, cfg.steps = 1e-3, 0, 10
  abstract_model, abstract_opt, model_state, opt_state = train_step.init_state(
      _spec().build, train_step.make_optimizer(cfg), mesh)
  local = {**_batch(), 'family': _FAMILY.astype(np.int32)}
  batch = sharding.host_local_to_global(local, mesh)
  outputs = logit_scale = None
  if with_embeddings:
    model = nnx.merge(nnx.graphdef(abstract_model), model_state)
    embed = nnx.jit(lambda m, b: m(b['image'], b['view'], b['tokens'], with_view=True, with_head=False))
    outputs = jax.device_get(embed(model, train_step.model_inputs(batch, PIXELS)))
    logit_scale = float(model.clip.logit_scale[...])
  step = train_step.jit_train_step(abstract_model, abstract_opt, mesh, _LAMBDAS, micro_batches,
                                   pixel_normalization=PIXELS, mask_same_family=mask_same_family)
  model_state, _, metrics = step(model_state, opt_state, batch)
  return (jax.device_get(metrics), jax.device_get(nnx.to_pure_dict(model_state)), outputs, logit_scale, local)


@pytest.mark.slow  # three compiled train steps: ~75 s of CPU on the shared 2-core machine
def test_train_step_masks_same_family_pairs_sharded_as_on_one_device():
  """The jitted step with mask_same_family: on one device its L_CACL and L_MVCL equal the float64 reference with
  the batch's families; sharded over (data 2, fsdp 4) and with GradCache micro-batches, the same loss terms
  and updated parameters as one device."""
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices (conftest forces 8 host devices)')
  from tests.test_sharding import _max_abs
  metrics, params, outputs, logit_scale, batch = _step((1, 1), True, with_embeddings=True)
  w = batch['weight'] / batch['weight'].mean()
  records = batch['record']
  assert len(set(_FAMILY)) < len(set(records))  # families join records: the masks differ
  for term, other in (('cacl', 'text'), ('mvcl', 'view')):
    expected = np_infonce(outputs['image'], outputs[other], records, w, logit_scale, _FAMILY)
    assert float(metrics[term]) == pytest.approx(expected, rel=1e-5), term
  # ... which the record-only mask (the default step, tested in test_sharding) does not give
  assert np_infonce(outputs['image'], outputs['text'], records, w, logit_scale) > float(metrics['cacl']) + 1e-3
  for mesh_shape, micro in (((2, 4), 1), ((1, 1), 2)):
    sharded, sharded_params, _, _, _ = _step(mesh_shape, True, micro)
    for k in ('loss', 'cacls', 'cacl', 'mvcl'):
      assert float(sharded[k]) == pytest.approx(float(metrics[k]), rel=1e-5), (mesh_shape, micro, k)
    assert _max_abs(sharded_params, params) <= 1e-5, (mesh_shape, micro)
