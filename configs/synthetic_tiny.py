"""The embedded default: DesignCLIP from scratch on the synthetic design-patent set, on a laptop CPU.

    python -m designclip_jax.train --config configs/synthetic_tiny.py --workdir runs/tiny

First use generates 1,500 synthetic patents and ingests them into ~/.cache/designclip_jax (about
20 s), then trains the 'tiny' towers (3+3 layers, width 128, 64-px drawings) for 600 steps at
batch 64 and evaluates on the test split. Measured on a 2-core CPU: ~9 min of training (75
examples/s); L_CACL 3.9 -> ~0.5, L_MVCL 4.16 -> ~2; zero-shot top-1 0.21 (chance 0.03), text->image
R@5 0.58, image-retrieval mAP 0.087, linear probe 0.60 (README has the table).
Smoke-test variant: --config.train.steps=20 --config.eval.tasks=zero_shot
"""

from designclip_jax.train.config import base_config


def get_config():
  c = base_config()
  c.hardware = 'cpu'  # python -m designclip_jax.aot compiles for this target by default
  c.model.preset = 'tiny'
  c.model.fusion_width = 128
  c.model.pixel_normalization = 'sketch'  # from scratch: see data.images.PIXEL_NORMALIZATIONS
  c.data.context_length = 48
  c.train.steps = 600
  c.train.global_batch = 64
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 60
  c.train.weight_decay = 0.1
  c.train.log_every = 20
  c.train.checkpoint_every = 200
  c.eval.tasks = ('zero_shot', 'image_retrieval', 'multimodal_retrieval', 'linear_probe')
  return c
