"""CLIP's modified ResNet image tower (RN50, RN101): three-conv stem, anti-aliased strided bottlenecks
(an average pool stands in for every stride), and a QKV attention pool in place of global average pooling.

Attribute names mirror OpenAI's ``clip/model.py`` (``layer1.0.conv1``, ``attnpool.q_proj`` …) so the
checkpoint converter is a table of renames.

BatchNorm has two modes (``batchnorm``). 'frozen' (default): stored statistics in training as well as in
evaluation, scale and bias still train (open_clip's ``lock_image`` / ``freeze_bn_stats`` way); a step does not
depend on how the batch is split, and GradCache accumulation stays exact. 'batch': in training mode
(``module.train()``, set by the train step) normalise with the batch's statistics and update the stored ones
as torch does (momentum 0.1, unbiased running variance); under ``jit`` over a sharded global batch the mean
is taken over the whole global batch, i.e. synchronised BatchNorm. Evaluation always uses stored statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from designclip_jax.models.config import VisionConfig
from designclip_jax.models.layers import BlockOptions, Dense, gathered, param, shard_batch

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default


class Conv(nnx.Module):
  """Bias-free 2-D convolution, NHWC input, HWIO kernel, PyTorch-style symmetric padding."""

  def __init__(self, in_ch: int, out_ch: int, size: int, *, stride: int = 1, dtype=jnp.float32, rngs: nnx.Rngs):
    fan_in = in_ch * size * size
    self.kernel = param(rngs, nnx.initializers.normal(fan_in ** -0.5), (size, size, in_ch, out_ch),
                        (None, None, None, 'embed'))
    self.stride, self.pad, self.dtype = stride, size // 2, dtype

  def __call__(self, x):
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), gathered(self.kernel[...].astype(self.dtype)), (self.stride, self.stride),
        [(self.pad, self.pad)] * 2, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


BATCHNORM_MODES = ('frozen', 'batch')
BN_MOMENTUM = 0.1  # torch.nn.BatchNorm2d's default


class BatchNorm(nnx.Module):
  """y = (x - mean) / sqrt(var + eps) * scale + bias; which mean/var is used: see the module docstring."""

  def __init__(self, channels: int, mode: str, *, zero_scale: bool = False, rngs: nnx.Rngs):
    init = nnx.initializers.zeros if zero_scale else nnx.initializers.ones
    self.scale = param(rngs, init, (channels,), ('embed',))
    self.bias = param(rngs, nnx.initializers.zeros, (channels,), ('embed',))
    self.mean = nnx.BatchStat(jnp.zeros((channels,), jnp.float32), out_sharding=('embed',), eager_sharding=False)
    self.var = nnx.BatchStat(jnp.ones((channels,), jnp.float32), out_sharding=('embed',), eager_sharding=False)
    self.batch_statistics = mode == 'batch'
    self.use_running_average = True  # nnx's Module.train() / eval() switch this

  def __call__(self, x):
    if self.batch_statistics and not self.use_running_average:
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(x32 - mean), axis=(0, 1, 2))  # biased, for normalising
      n = x.shape[0] * x.shape[1] * x.shape[2]
      self.mean[...] = (1 - BN_MOMENTUM) * self.mean[...] + BN_MOMENTUM * jax.lax.stop_gradient(mean)
      self.var[...] = (1 - BN_MOMENTUM) * self.var[...] + BN_MOMENTUM * jax.lax.stop_gradient(var * n / max(n - 1, 1))
    else:
      mean, var = self.mean[...], self.var[...]
    mul = self.scale[...] * jax.lax.rsqrt(var + BN_EPS)
    add = self.bias[...] - mean * mul
    return x * mul.astype(x.dtype) + add.astype(x.dtype)


def avg_pool(x, size: int):
  """torch.nn.AvgPool2d(size): window = stride = size, no padding, remainder rows/cols dropped."""
  if size == 1:
    return x
  b, h, w, c = x.shape
  h, w = h // size, w // size
  return x[:, :h * size, :w * size].reshape(b, h, size, w, size, c).mean(axis=(2, 4))


class Bottleneck(nnx.Module):
  expansion = 4

  def __init__(self, in_ch: int, planes: int, stride: int, dtype, bn: str, *, rngs: nnx.Rngs):
    out_ch = planes * self.expansion
    self.conv1 = Conv(in_ch, planes, 1, dtype=dtype, rngs=rngs)
    self.bn1 = BatchNorm(planes, bn, rngs=rngs)
    self.conv2 = Conv(planes, planes, 3, dtype=dtype, rngs=rngs)
    self.bn2 = BatchNorm(planes, bn, rngs=rngs)
    self.conv3 = Conv(planes, out_ch, 1, dtype=dtype, rngs=rngs)
    self.bn3 = BatchNorm(out_ch, bn, zero_scale=True, rngs=rngs)
    self.stride = stride
    # [conv, bn] after an avg pool, like OpenAI's Sequential('-1': pool, '0': conv, '1': bn)
    self.downsample = nnx.List([Conv(in_ch, out_ch, 1, dtype=dtype, rngs=rngs), BatchNorm(out_ch, bn, rngs=rngs)]
                               ) if stride > 1 or in_ch != out_ch else None

  def __call__(self, x):
    out = jax.nn.relu(self.bn1(self.conv1(x)))
    out = jax.nn.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(avg_pool(out, self.stride)))
    identity = x
    if self.downsample is not None:
      conv, bn = self.downsample
      identity = bn(conv(avg_pool(x, self.stride)))
    return jax.nn.relu(out + identity)


class AttentionPool(nnx.Module):
  """Multi-head attention over [mean token, spatial tokens] with learned positions, projected to the joint
  space. Every position is returned: the first is CLIP's pooled embedding, the rest feed the fusion head."""

  def __init__(self, grid: int, width: int, heads: int, out_dim: int, dtype, *, rngs: nnx.Rngs):
    if width % heads:
      raise ValueError(f'attention-pool width {width} is not divisible by heads={heads} (vision_heads)')
    self.positional_embedding = param(rngs, nnx.initializers.normal(width ** -0.5), (grid * grid + 1, width),
                                      (None, 'embed'))
    self.q_proj = Dense(width, width, ('embed', 'heads'), dtype=dtype, rngs=rngs)
    self.k_proj = Dense(width, width, ('embed', 'heads'), dtype=dtype, rngs=rngs)
    self.v_proj = Dense(width, width, ('embed', 'heads'), dtype=dtype, rngs=rngs)
    self.c_proj = Dense(width, out_dim, ('heads', 'joint'), dtype=dtype, rngs=rngs)
    self.heads, self.dtype = heads, dtype

  def __call__(self, x):
    b, h, w, c = x.shape
    if h * w + 1 != self.positional_embedding.shape[0]:
      raise ValueError(f'a {h}x{w} feature map does not match the attention pool\'s '
                       f'{self.positional_embedding.shape[0] - 1} positions: wrong input image size')
    x = x.reshape(b, h * w, c)
    x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1) + self.positional_embedding[...].astype(x.dtype)
    split = lambda t: t.reshape(b, h * w + 1, self.heads, c // self.heads)
    q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) * (c // self.heads) ** -0.5
    attn = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', attn, v).reshape(b, h * w + 1, c)
    return self.c_proj(out)


class ModifiedResNet(nnx.Module):
  """Returns (pooled, tokens): the attention-pooled embedding (B, D), already in the joint space, and all
  attention-pool outputs (B, 1+HW, D)."""

  def __init__(self, cfg: VisionConfig, embed_dim: int, opts: BlockOptions, *, batchnorm: str = 'frozen',
               rngs: nnx.Rngs):
    if batchnorm not in BATCHNORM_MODES:
      raise ValueError(f'batchnorm={batchnorm!r}; choose one of {BATCHNORM_MODES}')
    if cfg.image_size % 32:
      raise ValueError(f'a ResNet tower needs image_size divisible by 32, got {cfg.image_size}')
    width, dtype = cfg.width, opts.dtype
    self.conv1 = Conv(cfg.channels, width // 2, 3, stride=2, dtype=dtype, rngs=rngs)
    self.bn1 = BatchNorm(width // 2, batchnorm, rngs=rngs)
    self.conv2 = Conv(width // 2, width // 2, 3, dtype=dtype, rngs=rngs)
    self.bn2 = BatchNorm(width // 2, batchnorm, rngs=rngs)
    self.conv3 = Conv(width // 2, width, 3, dtype=dtype, rngs=rngs)
    self.bn3 = BatchNorm(width, batchnorm, rngs=rngs)
    in_ch = width
    for stage, blocks in enumerate(cfg.stage_blocks):
      planes = width * 2 ** stage
      layer = []
      for i in range(blocks):
        layer.append(Bottleneck(in_ch, planes, 2 if (stage and not i) else 1, dtype, batchnorm, rngs=rngs))
        in_ch = planes * Bottleneck.expansion
      setattr(self, f'layer{stage + 1}', nnx.List(layer))
    self.num_stages = len(cfg.stage_blocks)
    self.attnpool = AttentionPool(cfg.image_size // 32, in_ch, cfg.heads, embed_dim, dtype, rngs=rngs)
    self.remat = opts.remat

  def __call__(self, pixels):
    x = jax.nn.relu(self.bn1(self.conv1(shard_batch(pixels))))
    x = jax.nn.relu(self.bn2(self.conv2(x)))
    x = shard_batch(avg_pool(jax.nn.relu(self.bn3(self.conv3(x))), 2))
    for stage in range(self.num_stages):
      for block in getattr(self, f'layer{stage + 1}'):
        x = shard_batch(nnx.remat(lambda blk, y: blk(y))(block, x) if self.remat else block(x))
    tokens = shard_batch(self.attnpool(x))
    return tokens[:, 0].astype(jnp.float32), tokens
