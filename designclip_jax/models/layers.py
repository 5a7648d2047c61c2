"""Transformer building blocks shared by the vision tower, the text tower and the fusion head.

Every parameter carries logical axis names (``out_sharding`` metadata) such as ``('embed', 'mlp')``, and
activations mark their batch dim as 'batch' (``shard_batch``); ``designclip_jax.sharding`` maps both onto
mesh axes, so the modules never mention devices.
Attribute names mirror Hugging Face CLIP (``self_attn.q_proj``, ``mlp.fc1``, ``layer_norm1`` …) so
the checkpoint converter is a table of renames, not a rewrite.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen, nnx

Dtype = jnp.dtype


def param(rngs: nnx.Rngs, init: Callable, shape: tuple[int, ...], axes: tuple[str | None, ...]) -> nnx.Param:
  """A float32 parameter annotated with logical axes (sharding is applied later, by rule)."""
  return nnx.Param(init(rngs.params(), shape, jnp.float32), out_sharding=axes, eager_sharding=False)


def shard_batch(x):
  """Split x's leading dim over the logical 'batch' axis and keep its other dims whole, when traced under
  ``sharding.activation_sharding``; a no-op otherwise (no logical rules: no mesh)."""
  return linen.with_logical_constraint(x, ('batch',) + (None,) * (x.ndim - 1))


def gathered(w):
  """A weight whole on every device, in the compute dtype, when traced under ``sharding.activation_sharding``
  (a no-op otherwise): FSDP's all-gather made explicit, right before the matmul and inside remat, so the
  backward pass gathers again instead of keeping it, and the matmul runs on each device's own rows.

  Left to choose, XLA:TPU's partitioner turned every matmul whose weight is sharded over the devices that
  also split its rows (fsdp spanning all chips, data=1) into a loop of collective-permutes (windowed
  einsum) that defeated remat: ViT-L/14 at data=1 x fsdp=8 needed 16.6 GiB of temporaries per chip, 2.5
  with this.
  """
  return linen.with_logical_constraint(w, (None,) * w.ndim)


def quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable] = {
    'quick_gelu': quick_gelu,
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu_pytorch_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'relu': jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BlockOptions:
  """Numerics shared by every block of a tower: compute dtype, LayerNorm epsilon, remat."""
  dtype: Dtype = jnp.float32
  layer_norm_eps: float = 1e-5
  remat: bool = False


class Dense(nnx.Module):
  """y = x @ kernel + bias, computed in ``dtype`` with float32 parameters."""

  def __init__(self, in_features: int, out_features: int, axes: tuple[str | None, str | None], *,
               use_bias: bool = True, dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.kernel = param(rngs, nnx.initializers.normal(in_features ** -0.5), (in_features, out_features), axes)
    self.bias = param(rngs, nnx.initializers.zeros, (out_features,), (axes[1],)) if use_bias else None
    self.dtype = dtype

  def __call__(self, x):
    kernel = gathered(self.kernel[...].astype(self.dtype))
    y = jnp.dot(x.astype(self.dtype), kernel)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class LayerNorm(nnx.Module):
  """LayerNorm whose statistics are always computed in float32 (bf16 variance is too coarse)."""

  def __init__(self, features: int, *, eps: float = 1e-5, dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.scale = param(rngs, nnx.initializers.ones, (features,), ('embed',))
    self.bias = param(rngs, nnx.initializers.zeros, (features,), ('embed',))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
    return y.astype(self.dtype)


class Attention(nnx.Module):
  """Multi-head self-attention with separate q/k/v/out projections (the HF CLIP layout)."""

  def __init__(self, width: int, heads: int, *, dtype: Dtype, rngs: nnx.Rngs):
    if width % heads:
      raise ValueError(f'width {width} is not divisible by {heads} attention heads')
    self.heads = heads
    self.q_proj = Dense(width, width, ('embed', 'heads'), dtype=dtype, rngs=rngs)
    self.k_proj = Dense(width, width, ('embed', 'heads'), dtype=dtype, rngs=rngs)
    self.v_proj = Dense(width, width, ('embed', 'heads'), dtype=dtype, rngs=rngs)
    self.out_proj = Dense(width, width, ('heads', 'embed'), dtype=dtype, rngs=rngs)

  def __call__(self, x, mask=None):
    """x: (B, L, W); mask: broadcastable to (B, heads, L, L), True where attention is allowed."""
    b, length, width = x.shape
    split = lambda t: t.reshape(b, length, self.heads, width // self.heads)
    q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) * (width // self.heads) ** -0.5
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, length, width)
    return self.out_proj(out)


class MLP(nnx.Module):

  def __init__(self, width: int, hidden: int, act: str, *, dtype: Dtype, rngs: nnx.Rngs):
    if act not in ACTIVATIONS:
      raise ValueError(f'unsupported activation {act!r}; known: {sorted(ACTIVATIONS)}')
    self.fc1 = Dense(width, hidden, ('embed', 'mlp'), dtype=dtype, rngs=rngs)
    self.fc2 = Dense(hidden, width, ('mlp', 'embed'), dtype=dtype, rngs=rngs)
    self.act = act

  def __call__(self, x):
    return self.fc2(ACTIVATIONS[self.act](self.fc1(x)))


class EncoderLayer(nnx.Module):
  """Pre-LN residual block: x + attn(ln1(x)), then + mlp(ln2(x))."""

  def __init__(self, width: int, heads: int, mlp_dim: int, act: str, opts: BlockOptions, *, rngs: nnx.Rngs):
    self.layer_norm1 = LayerNorm(width, eps=opts.layer_norm_eps, dtype=opts.dtype, rngs=rngs)
    self.self_attn = Attention(width, heads, dtype=opts.dtype, rngs=rngs)
    self.layer_norm2 = LayerNorm(width, eps=opts.layer_norm_eps, dtype=opts.dtype, rngs=rngs)
    self.mlp = MLP(width, mlp_dim, act, dtype=opts.dtype, rngs=rngs)

  def __call__(self, x, mask=None):
    x = x + self.self_attn(self.layer_norm1(x), mask)
    return x + self.mlp(self.layer_norm2(x))


class Encoder(nnx.Module):
  """A stack of EncoderLayers, each optionally rematerialised in the backward pass."""

  def __init__(self, width: int, layers: int, heads: int, mlp_dim: int, act: str, opts: BlockOptions, *,
               rngs: nnx.Rngs):
    self.layers = nnx.List([EncoderLayer(width, heads, mlp_dim, act, opts, rngs=rngs) for _ in range(layers)])
    self.remat = opts.remat

  def __call__(self, x, mask=None):
    x = shard_batch(x)
    for layer in self.layers:
      if self.remat:
        x = nnx.remat(lambda lyr, h, m: lyr(h, m))(layer, x, mask)
      else:
        x = layer(x, mask)
      x = shard_batch(x)  # every block boundary: what remat keeps, and where XLA could drift to width sharding
    return x
