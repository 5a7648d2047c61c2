"""The pure pieces of training: optimizer, abstract state with shardings, and the jitted train step."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from designclip_jax import losses, sharding
from designclip_jax.models.designclip import DesignCLIP

_DECAYED = {'kernel', 'patch_embedding', 'token_embedding'}  # not biases, norms, positions, logit scale
_VISION = {'vision_model', 'visual_projection'}
_TEXT = {'text_model', 'text_projection'}


def _path_names(path) -> set[str]:
  return {str(getattr(k, 'key', getattr(k, 'name', k))) for k in path}


def _labels(params, fn):
  return jax.tree_util.tree_map_with_path(lambda path, _: fn(_path_names(path)), params)


def make_optimizer(train_cfg) -> optax.GradientTransformation:
  """AdamW (β2 0.98, eps 1e-6) on a warmup + cosine schedule, global-norm clipping, weight decay
  only on matrices, and optional frozen towers."""
  schedule = optax.warmup_cosine_decay_schedule(0.0, train_cfg.learning_rate, train_cfg.warmup_steps,
                                                max(train_cfg.steps, train_cfg.warmup_steps + 1),
                                                end_value=train_cfg.learning_rate * train_cfg.final_lr_fraction)
  adamw = optax.adamw(schedule, b1=0.9, b2=0.98, eps=1e-6, weight_decay=train_cfg.weight_decay,
                      mask=lambda params: _labels(params, lambda names: bool(names & _DECAYED)))
  tx = optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip), adamw)
  frozen = set()
  if train_cfg.freeze_vision:
    frozen |= _VISION
  if train_cfg.freeze_text:
    frozen |= _TEXT
  if frozen:
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                               lambda params: _labels(params, lambda names: 'frozen' if names & frozen else 'train'))
  return tx


def global_contrastive_loss(a, b, ids, weights, logit_scale, mesh):
  """Weighted symmetric InfoNCE over the global batch: every device scores its local rows against the
  all-gathered columns (memory linear in the global batch), then the sums are added across devices."""
  axes = sharding.BATCH_AXES

  def local(a, b, ids, weights, logit_scale):
    gather = lambda x: jax.lax.all_gather(x, axes, tiled=True)
    offset = jax.lax.axis_index(axes) * a.shape[0]
    part = losses.contrastive_sum(a, b, gather(a), gather(b), ids, gather(ids), offset, weights, logit_scale)
    return jax.lax.psum(part, axes)

  spec = P(axes)
  total = jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec, spec, P()), out_specs=P())(
      a, b, ids, weights, logit_scale)
  return total / a.shape[0]


def loss_terms(outputs, batch, logit_scale, lambdas, mesh):
  """Every enabled loss term (each already a mean over the global batch)."""
  w = batch['weight'].astype(jnp.float32)
  w = w * (w.shape[0] / jnp.sum(w))  # mean 1 over the global batch
  terms = {}
  if lambdas[0]:
    terms['cacls'] = losses.weighted_cross_entropy(outputs['class_logits'], batch['label'], w)
  if lambdas[1]:
    terms['cacl'] = global_contrastive_loss(outputs['image'], outputs['text'], batch['patent'], w, logit_scale, mesh)
  if lambdas[2]:
    terms['mvcl'] = global_contrastive_loss(outputs['image'], outputs['view'], batch['patent'], w, logit_scale, mesh)
  return terms


def forward_loss(model: DesignCLIP, batch, lambdas, mesh):
  outputs = model(batch['image'], batch['view'], batch['tokens'], with_view=bool(lambdas[2]),
                  with_head=bool(lambdas[0]))
  terms = loss_terms(outputs, batch, model.clip.logit_scale[...], lambdas, mesh)
  return losses.total_loss(terms, lambdas), terms


def train_step(model: DesignCLIP, optimizer: nnx.Optimizer, batch, *, lambdas, mesh):
  """One optimizer update in place; returns the step's metrics."""
  (loss, terms), grads = nnx.value_and_grad(forward_loss, has_aux=True)(model, batch, lambdas, mesh)
  optimizer.update(model, grads)
  return {'loss': loss, **terms, 'grad_norm': optax.global_norm(grads),
          'temperature': 1.0 / jnp.exp(jnp.minimum(model.clip.logit_scale[...], losses.MAX_LOGIT_SCALE))}


@dataclasses.dataclass
class CompiledStep:
  """train_step jitted over (model state, optimizer state) with explicit shardings and donation."""
  model_graph: nnx.GraphDef
  opt_graph: nnx.GraphDef
  model_sharding: object
  opt_sharding: object
  fn: Callable

  def __call__(self, model_state, opt_state, batch):
    return self.fn(model_state, opt_state, batch)


def compile_step(abstract_model, abstract_opt, mesh, lambdas) -> CompiledStep:
  model_graph, model_state = nnx.split(abstract_model)
  opt_graph, opt_state = nnx.split(abstract_opt)
  model_sharding = sharding.state_shardings(model_state, mesh)
  opt_sharding = sharding.state_shardings(opt_state, mesh)

  def pure_step(model_state, opt_state, batch):
    model = nnx.merge(model_graph, model_state)
    optimizer = nnx.merge(opt_graph, opt_state)
    metrics = train_step(model, optimizer, batch, lambdas=lambdas, mesh=mesh)
    return nnx.state(model), nnx.state(optimizer), metrics

  fn = jax.jit(pure_step, in_shardings=(model_sharding, opt_sharding, sharding.batch_sharding(mesh)),
               out_shardings=(model_sharding, opt_sharding, sharding.replicated(mesh)), donate_argnums=(0, 1))
  return CompiledStep(model_graph, opt_graph, model_sharding, opt_sharding, fn)


def init_state(make_model: Callable[[], DesignCLIP], tx, mesh):
  """Model and optimizer state created directly in their shardings (shapes from eval_shape first)."""
  abstract_model = nnx.eval_shape(make_model)
  abstract_opt = nnx.eval_shape(lambda: nnx.Optimizer(make_model(), tx, wrt=nnx.Param))
  model_sharding = sharding.state_shardings(nnx.state(abstract_model), mesh)
  opt_sharding = sharding.state_shardings(nnx.state(abstract_opt), mesh)

  def create():
    model = make_model()
    return nnx.state(model), nnx.state(nnx.Optimizer(model, tx, wrt=nnx.Param))

  model_state, opt_state = jax.jit(create, out_shardings=(model_sharding, opt_sharding))()
  return abstract_model, abstract_opt, model_state, opt_state
