"""A micro training config over the session's synthetic data set, small enough for CI."""

from designclip_jax.train.config import base_config


def micro_config(data_dir, **train):
  c = base_config()
  c.model.preset = 'tiny'
  c.model.overrides = dict(vision_image_size=32, vision_patch_size=8, vision_layers=1, vision_width=64,
                           vision_heads=2, vision_mlp_dim=128, text_layers=1, text_width=64, text_heads=2,
                           text_mlp_dim=128, text_context_length=32, embed_dim=32)
  c.model.fusion_width = 32
  c.model.fusion_heads = 2
  c.model.pixel_normalization = 'sketch'
  c.data.dir = data_dir
  c.data.context_length = 32
  c.train.update({**dict(steps=8, global_batch=16, learning_rate=3e-3, warmup_steps=2, log_every=1,
                         checkpoint_every=4, keep_checkpoints=10), **train})
  c.eval.tasks = ()
  c.eval.batch_size = 32
  return c


def get_config(data_dir):
  """For the CLI: --config tests/train_helpers.py:DATA_DIR (then --config.x=y overrides as usual)."""
  return micro_config(data_dir)
