"""DesignCLIP ViT-B/16 from OpenAI CLIP weights on IMPACT — the paper's main setting.

    # once: convert/download nothing at run time; point model.init at a local HF CLIP directory
    python -m designclip_jax.data.ingest --csv 'impact/*.csv' --images impact/ --out data/impact --image-size 256
    python -m designclip_jax.train --config configs/impact_vitb16.py --workdir runs/vitb16 \
        --config.data.dir=data/impact --config.model.init=/path/to/clip-vit-base-patch16

Hardware: a v4-32 TPU slice (16 chips, topology v4:2x2x4; bf16, global batch 1024, data parallel, FSDP
off). `python -m designclip_jax.aot --config configs/impact_vitb16.py` compiles this step for it and checks
it fits (bench/RESULTS.md). GPU plan, unmeasured: one node of 8x A100/H100 80 GB; checked only by
compiling for v5p:2x2x2 (8 chips of 95 GiB, the nearest TPU per-chip memory), not on a GPU.
~285k training patents; 10 epochs ≈ 2,800 steps. Wall time on accelerators is not measured yet (no
GPU/TPU run so far; bench/gpu_check.py is the script that will measure it).
Paper (ViT-B): zero-shot top-1 ≈ 14.7%, T→I R@5 ≈ 29.8%, linear probe ≈ 41.3%.
Smoke test (any machine): --config.train.steps=5 --config.train.global_batch=8
"""

from designclip_jax.train.config import base_config


def get_config():
  c = base_config()
  c.hardware = 'v4:2x2x4'  # v4-32; the default target of python -m designclip_jax.aot
  c.model.preset = 'ViT-B/16'
  c.model.init = ''  # required: a Hugging Face CLIP directory (config.json + model.safetensors + tokenizer)
  c.model.dtype = 'bfloat16'
  c.model.pixel_normalization = 'clip'
  c.data.pair_strategy = 'cover'
  # a worker is about a core; at the AOT bound a v4 host takes ~4,750 samples/s, ~8.4 cores of the pipeline
  # (bench/pipeline_throughput.py): 24 workers give 2.8x, of the host's 240 vCPUs (v5e-16: 6 cores of 112)
  c.data.worker_count = 24
  c.train.steps = 2800
  c.train.global_batch = 1024
  c.train.learning_rate = 1e-5
  c.train.warmup_steps = 200
  c.train.weight_decay = 0.2
  c.train.log_every = 20
  c.train.checkpoint_every = 500
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.eval.split = 'test'
  c.eval.batch_size = 512
  return c
