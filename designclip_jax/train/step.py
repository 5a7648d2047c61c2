"""The pure pieces of training: optimizer, abstract state with shardings, and the jitted train step."""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from designclip_jax import losses, sharding
from designclip_jax.data import images as image_ops
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


def loss_terms(outputs, batch, logit_scale, lambdas, mesh, mask_same_family: bool = False):
  """Every enabled loss term (each already a mean over the global batch). The contrastive terms leave out of each
  row's softmax the other draws of its record, or with ``mask_same_family`` every record of its family."""
  rows = NamedSharding(mesh, P(sharding.BATCH_AXES))  # loss inputs stay split by rows, as the towers left them
  outputs = {k: None if v is None else jax.lax.with_sharding_constraint(v, rows) for k, v in outputs.items()}
  w = batch['weight'].astype(jnp.float32)
  w = losses.normalize_weights(w, jnp.sum(w), w.shape[0])  # mean 1 over the global batch
  groups = 'family' if mask_same_family else 'record'
  terms = {}
  if lambdas[0]:
    terms['cacls'] = losses.weighted_cross_entropy(outputs['class_logits'], batch['label'], w)
  if lambdas[1]:
    terms['cacl'] = global_contrastive_loss(outputs['image'], outputs['text'], batch[groups], w, logit_scale, mesh)
  if lambdas[2]:
    terms['mvcl'] = global_contrastive_loss(outputs['image'], outputs['view'], batch[groups], w, logit_scale, mesh)
  return terms


def model_inputs(batch, pixel_normalization: str):
  """The batch as the towers take it: drawings arrive as the pipeline ships them, uint8 grey (N, H, W, 1), and
  are normalised to float32 RGB here, on the devices (data.images.normalize)."""
  return {**batch, 'image': image_ops.normalize(batch['image'], pixel_normalization),
          'view': image_ops.normalize(batch['view'], pixel_normalization)}


def forward_loss(model: DesignCLIP, batch, lambdas, mesh, mask_same_family: bool = False):
  outputs = model(batch['image'], batch['view'], batch['tokens'], with_view=bool(lambdas[2]),
                  with_head=bool(lambdas[0]))
  terms = loss_terms(outputs, batch, model.clip.logit_scale[...], lambdas, mesh, mask_same_family)
  return losses.total_loss(terms, lambdas), terms


def _update(model: DesignCLIP, optimizer: nnx.Optimizer, grads):
  """The optimizer update, then the logit scale clamped to [0, ln 100] (open_clip's way: the loss uses it
  unclamped, so its gradient at the cap is whole and a step down is always possible)."""
  optimizer.update(model, grads)
  model.clip.logit_scale[...] = losses.clamp_logit_scale(model.clip.logit_scale[...])


def train_step(model: DesignCLIP, optimizer: nnx.Optimizer, batch, *, lambdas, mesh, mask_same_family: bool = False):
  """One optimizer update in place; returns the step's metrics."""
  model.train()  # ResNet BatchNorm in 'batch' mode normalises with (and records) batch statistics
  (loss, terms), grads = nnx.value_and_grad(forward_loss, has_aux=True)(model, batch, lambdas, mesh, mask_same_family)
  _update(model, optimizer, grads)
  return {'loss': loss, **terms, 'grad_norm': optax.global_norm(grads),
          'temperature': 1.0 / jnp.exp(model.clip.logit_scale[...])}


def accumulated_train_step(model: DesignCLIP, optimizer: nnx.Optimizer, batch, *, lambdas, mesh, micro_batches,
                           mask_same_family: bool = False):
  """The update of ``train_step`` on the whole batch, holding activations for one micro-batch at a time
  (GradCache, Gao et al. 2021), so every contrastive negative is kept.

  Pass 1 embeds each micro-batch without gradients; the contrastive terms and their gradients with respect
  to the embeddings (and the logit scale) are taken over the full batch. Pass 2 re-runs each micro-batch
  with gradients on a surrogate, Σ <dL/d embedding, embedding> + its share of L_CACLS, and sums the
  parameter gradients. Costs one extra forward pass of the towers.
  """
  if any(getattr(m, 'batch_statistics', False) for _, m in nnx.iter_modules(model)):
    raise ValueError("train.micro_batches > 1 needs towers whose output does not depend on the rest of the "
                     "batch: use model.batchnorm='frozen' (batch statistics would differ per micro-batch)")
  k, n = micro_batches, batch['image'].shape[0]
  weight = batch['weight'].astype(jnp.float32)
  batch = {**batch, 'weight': losses.normalize_weights(weight, jnp.sum(weight), n)}  # once, over the whole batch
  # micro-batch i = rows i, i+k, i+2k, ...: with rows sharded in contiguous blocks, every device keeps
  # n/(k·devices) rows of each micro-batch, so no micro-batch moves between devices
  strided = jax.tree.map(lambda x: x.reshape(n // k, k, *x.shape[1:]), batch)
  micro = lambda i: jax.tree.map(lambda x: x[:, i], strided)
  with_view, with_head = bool(lambdas[2]), bool(lambdas[0])
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def forward(p, mb, head):
    return nnx.merge(graphdef, p, rest)(mb['image'], mb['view'], mb['tokens'], with_view=with_view, with_head=head)

  # ---- pass 1: embeddings of the whole batch, no activations kept
  names = ('image', 'text') + (('view',) if with_view else ())
  dim = model.clip.config.embed_dim

  def embed_one(i, buffers):
    out = forward(params, micro(i), False)
    return {name: buffers[name].at[:, i].set(out[name]) for name in names}

  buffers = jax.lax.fori_loop(0, k, embed_one, {name: jnp.zeros((n // k, k, dim), jnp.float32) for name in names})
  embeddings = {name: jax.lax.stop_gradient(v.reshape(n, dim)) for name, v in buffers.items()}

  def contrastive(embeddings, logit_scale):
    outputs = {**embeddings, 'view': embeddings.get('view'), 'class_logits': None}
    contrastive_lambdas = (0.0, lambdas[1], lambdas[2])
    terms = loss_terms(outputs, batch, logit_scale, contrastive_lambdas, mesh, mask_same_family)
    return losses.total_loss(terms, contrastive_lambdas), terms

  logit_scale = params['clip']['logit_scale'][...]
  (contrastive_loss, terms), (emb_grads, scale_grad) = jax.value_and_grad(contrastive, argnums=(0, 1), has_aux=True)(
      embeddings, logit_scale)
  emb_grads = {name: g.reshape(n // k, k, dim) for name, g in emb_grads.items()}

  # ---- pass 2: per micro-batch, back-propagate the cached embedding gradients (+ its share of L_CACLS)
  def surrogate(p, i):
    mb = micro(i)
    out = forward(p, mb, with_head)
    value = sum(jnp.sum(emb_grads[name][:, i] * out[name]) for name in names)
    value = value + scale_grad * p['clip']['logit_scale'][...] / k  # the logit scale's gradient, split k ways
    cacls = losses.weighted_cross_entropy(out['class_logits'], mb['label'], mb['weight']) if with_head else 0.0
    return value + lambdas[0] * cacls / k, cacls / k

  def grad_one(i, carry):
    grads, cacls = carry
    g, c = jax.grad(surrogate, has_aux=True)(params, i)
    return jax.tree.map(jnp.add, grads, g), cacls + c

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, cacls = jax.lax.fori_loop(0, k, grad_one, (zeros, jnp.zeros((), jnp.float32)))
  if with_head:
    terms = {'cacls': cacls, **terms}
  _update(model, optimizer, grads)
  return {'loss': contrastive_loss + lambdas[0] * cacls, **terms, 'grad_norm': optax.global_norm(grads),
          'temperature': 1.0 / jnp.exp(model.clip.logit_scale[...])}


@dataclasses.dataclass
class JittedTrainStep:
  """train_step jitted over (model state, optimizer state) with explicit shardings and donation."""
  model_graph: nnx.GraphDef
  opt_graph: nnx.GraphDef
  model_sharding: object
  opt_sharding: object
  fn: Callable
  pixel_normalization: str  # how the step normalises the uint8 drawings it takes

  def __call__(self, model_state, opt_state, batch):
    return self.fn(model_state, opt_state, batch)


def jit_train_step(abstract_model, abstract_opt, mesh, lambdas, micro_batches: int = 1, *,
                   pixel_normalization: str, mask_same_family: bool = False) -> JittedTrainStep:
  """The step takes batches as data.pipeline ships them (``pipeline.batch_shapes``): uint8 drawings, normalised
  inside by ``pixel_normalization`` (data.images.PIXEL_NORMALIZATIONS). ``mask_same_family``: the contrastive
  losses leave a row's whole family (``batch['family']``) out of its softmax, not only its record."""
  image_ops.check_normalization(pixel_normalization)
  model_graph, model_state = nnx.split(abstract_model)
  opt_graph, opt_state = nnx.split(abstract_opt)
  model_sharding = sharding.state_shardings(model_state, mesh)
  opt_sharding = sharding.state_shardings(opt_state, mesh)

  def pure_step(model_state, opt_state, batch):
    model = nnx.merge(model_graph, model_state)
    optimizer = nnx.merge(opt_graph, opt_state)
    batch = model_inputs(batch, pixel_normalization)
    with sharding.activation_sharding(mesh):  # activations split by rows only: FSDP shards just the state
      if micro_batches > 1:
        metrics = accumulated_train_step(model, optimizer, batch, lambdas=lambdas, mesh=mesh,
                                         micro_batches=micro_batches, mask_same_family=mask_same_family)
      else:
        metrics = train_step(model, optimizer, batch, lambdas=lambdas, mesh=mesh, mask_same_family=mask_same_family)
    return nnx.state(model), nnx.state(optimizer), metrics

  fn = jax.jit(pure_step, in_shardings=(model_sharding, opt_sharding, sharding.batch_sharding(mesh)),
               out_shardings=(model_sharding, opt_sharding, sharding.replicated(mesh)), donate_argnums=(0, 1))
  return JittedTrainStep(model_graph, opt_graph, model_sharding, opt_sharding, fn, pixel_normalization)


def lower_step(make_model: Callable[[], DesignCLIP], tx, mesh, lambdas, batch_shapes: dict, micro_batches: int = 1, *,
               pixel_normalization: str):
  """The jitted train step lowered from shapes alone (nothing allocated); ``.compile()`` then gives XLA's
  memory and cost analysis of the real step on ``mesh`` (whose devices may be abstract)."""
  abstract_model, abstract_opt = _abstract_state(make_model, tx)
  step = jit_train_step(abstract_model, abstract_opt, mesh, lambdas, micro_batches,
                        pixel_normalization=pixel_normalization)
  rows = sharding.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=rows) for k, v in batch_shapes.items()}
  return step.fn.lower(nnx.state(abstract_model), nnx.state(abstract_opt), batch)


def _abstract_state(make_model, tx):
  return nnx.eval_shape(make_model), nnx.eval_shape(lambda: nnx.Optimizer(make_model(), tx, wrt=nnx.Param))


def init_state(make_model: Callable[[], DesignCLIP], tx, mesh):
  """Model and optimizer state created directly in their shardings (shapes from eval_shape first)."""
  abstract_model, abstract_opt = _abstract_state(make_model, tx)
  model_sharding = sharding.state_shardings(nnx.state(abstract_model), mesh)
  opt_sharding = sharding.state_shardings(nnx.state(abstract_opt), mesh)

  def create():
    model = make_model()
    return nnx.state(model), nnx.state(nnx.Optimizer(model, tx, wrt=nnx.Param))

  model_state, opt_state = jax.jit(create, out_shardings=(model_sharding, opt_sharding))()
  return abstract_model, abstract_opt, model_state, opt_state
