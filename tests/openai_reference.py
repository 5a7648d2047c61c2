"""OpenAI's own PyTorch CLIP (clip/model.py from the openai-clip package): the independent reference for
the ResNet towers and the OpenAI state-dict format, which transformers does not cover.

The package's __init__ imports torchvision for its image transforms, so model.py (torch + numpy only) is
loaded by file path.
"""

import importlib.util
import json
import os
import warnings

import numpy as np
import pytest


def openai_model_module():
  spec = importlib.util.find_spec('clip')
  if spec is None or not spec.submodule_search_locations:
    pytest.skip('openai-clip is not installed (pip install -e ".[test]")')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'model.py')
  module_spec = importlib.util.spec_from_file_location('openai_clip_model', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def make_openai_clip(*, vision_layers, vision_width, image_resolution, vision_patch_size=None, embed_dim=32,
                     context_length=16, vocab_size=99, transformer_width=128, transformer_layers=2, seed=0,
                     act='quick_gelu'):
  """A small OpenAI CLIP (ResNet when vision_layers is a tuple) with every parameter and BatchNorm statistic
  randomised (the default init zeroes each bottleneck's last BN scale, which would hide the residual branch).
  act='gelu' swaps each MLP's QuickGELU for torch's exact GELU: open_clip's non-"quickgelu" models."""
  import torch
  module = openai_model_module()
  torch.manual_seed(seed)
  model = module.CLIP(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
                      vocab_size, transformer_width, transformer_width // 64, transformer_layers).eval()
  if act == 'gelu':
    for block in model.modules():
      if isinstance(block, module.ResidualAttentionBlock):
        block.mlp.gelu = torch.nn.GELU()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.add_(0.05 * torch.randn_like(p))
      if name.endswith(('bn1.weight', 'bn2.weight', 'bn3.weight', 'downsample.1.weight')):
        p.copy_(1 + 0.2 * torch.randn_like(p))
    for name, b in model.named_buffers():
      if name.endswith('running_mean'):
        b.copy_(0.1 * torch.randn_like(b))
      elif name.endswith('running_var'):
        b.copy_(0.5 + torch.rand_like(b))
  return model


def save_torchscript(model, path, image_resolution, context_length=16):
  """As OpenAI released its checkpoints: a traced TorchScript archive (module class names included)."""
  import torch
  example = (torch.zeros(1, 3, image_resolution, image_resolution), torch.zeros(1, context_length, dtype=torch.long))
  with warnings.catch_warnings():  # tracing warns about shape checks in torch's attention; they are constants here
    warnings.simplefilter('ignore', torch.jit.TracerWarning)
    torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(path))
  return str(path)


def write_open_clip_config(folder, quick_gelu):
  """The part of open_clip's open_clip_config.json that names the activation."""
  (folder / 'open_clip_config.json').write_text(json.dumps({'model_cfg': {'quick_gelu': quick_gelu}}))


def text_ids(rng, batch, length, vocab_size):
  """OpenAI layout: SOT, content, EOT (the largest id, which encode_text finds by argmax), zero padding."""
  ids = np.zeros((batch, length), np.int32)
  for row in range(batch):
    n = rng.integers(1, length - 1)
    ids[row, 0] = vocab_size - 2
    ids[row, 1:n + 1] = rng.integers(1, vocab_size - 2, n)
    ids[row, n + 1] = vocab_size - 1
  return ids


def torch_forward(model, pixels_nhwc, ids):
  import torch
  with torch.no_grad():
    pix = torch.from_numpy(np.ascontiguousarray(pixels_nhwc.transpose(0, 3, 1, 2)))
    tid = torch.from_numpy(ids.astype(np.int64))
    img, txt = model.encode_image(pix), model.encode_text(tid)
    logits = model(pix, tid)[0]
  return img.numpy(), txt.numpy(), logits.numpy()
