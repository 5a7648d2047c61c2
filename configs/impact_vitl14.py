"""DesignCLIP ViT-L/14 from OpenAI CLIP weights on IMPACT (the paper's strongest model).

    python -m designclip_jax.train --config configs/impact_vitl14.py --workdir runs/vitl14 \
        --config.data.dir=data/impact --config.model.init=/path/to/clip-vit-large-patch14

Hardware: a v4-64 TPU slice (32 chips, topology v4:2x4x4); bf16, remat on, FSDP over 8 chips so
parameters and Adam state are sharded (mesh data=4 x fsdp=8). Global batch 512. Checked to fit by
`python -m designclip_jax.aot --config configs/impact_vitl14.py` (bench/RESULTS.md). GPU plan, unmeasured:
2 nodes of 8 H100s (launch/slurm_multinode.sh; data=2 x fsdp=8), checked only by compiling for
v5p:2x2x4 (16 chips of 95 GiB), not on a GPU.
Paper (ViT-L): T→I R@5 ≈ 41.7%, R@10 ≈ 52.6%.
Smoke test: --config.train.steps=2 --config.train.global_batch=8 --config.mesh.fsdp=1
"""

from designclip_jax.train.config import base_config


def get_config():
  c = base_config()
  c.hardware = 'v4:2x4x4'  # v4-64; the default target of python -m designclip_jax.aot
  c.model.preset = 'ViT-L/14'
  c.model.init = ''
  c.model.dtype = 'bfloat16'
  c.model.remat = True
  c.model.fusion_width = 512
  c.data.worker_count = 8
  c.train.steps = 5600
  c.train.global_batch = 512
  c.train.learning_rate = 5e-6
  c.train.warmup_steps = 300
  c.train.checkpoint_every = 500
  c.mesh.data = -1
  c.mesh.fsdp = 8
  c.eval.batch_size = 256
  return c
