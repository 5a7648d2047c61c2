"""Tiny random transformers.CLIPModel checkpoints in PyTorch: the independent reference for parity tests."""

import numpy as np


def make_hf_clip(path, *, act='quick_gelu', eos_token_id=49407, vocab_size=99, text_layers=2, vision_layers=3,
                 text_heads=4, vision_heads=2, text_width=32, vision_width=48, image_size=32, patch_size=8,
                 context_length=16, projection_dim=24, seed=0):
  """Build, randomise (including LayerNorms and biases) and save a small CLIPModel; return it."""
  import torch
  from transformers import CLIPConfig, CLIPModel

  torch.manual_seed(seed)
  config = CLIPConfig(
      text_config=dict(vocab_size=vocab_size, hidden_size=text_width, intermediate_size=text_width * 3,
                       num_hidden_layers=text_layers, num_attention_heads=text_heads,
                       max_position_embeddings=context_length, hidden_act=act, eos_token_id=eos_token_id,
                       bos_token_id=0, pad_token_id=eos_token_id if eos_token_id != 2 else 1,
                       projection_dim=projection_dim),
      vision_config=dict(hidden_size=vision_width, intermediate_size=vision_width * 2,
                         num_hidden_layers=vision_layers, num_attention_heads=vision_heads, image_size=image_size,
                         patch_size=patch_size, hidden_act=act, projection_dim=projection_dim),
      projection_dim=projection_dim, logit_scale_init_value=2.5)
  model = CLIPModel(config).eval()
  with torch.no_grad():
    for p in model.parameters():  # default init leaves LayerNorm at (1, 0): randomise everything
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(path)
  return model


def random_text_ids(rng, batch, length, vocab_size, eos_token_id):
  """BOS, random content of random length, EOS, then padding with the EOS id (HF CLIP's layout)."""
  ids = np.full((batch, length), eos_token_id, np.int32)
  content_vocab = [t for t in range(1, vocab_size - 1) if t != eos_token_id]
  for row in range(batch):
    n = rng.integers(1, length - 1)
    ids[row, 0] = 0
    ids[row, 1:n + 1] = rng.choice(content_vocab, n)
    ids[row, n + 1] = eos_token_id
  return ids


def torch_forward(model, pixels_nhwc, ids):
  import torch
  with torch.no_grad():
    pix = torch.from_numpy(np.ascontiguousarray(pixels_nhwc.transpose(0, 3, 1, 2)))
    tid = torch.from_numpy(ids.astype(np.int64))
    img = model.get_image_features(pixel_values=pix)
    txt = model.get_text_features(input_ids=tid)
    img = getattr(img, 'pooler_output', img)
    txt = getattr(txt, 'pooler_output', txt)
    logits = model(input_ids=tid, pixel_values=pix).logits_per_image
  return img.numpy(), txt.numpy(), logits.numpy()
