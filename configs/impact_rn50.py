"""DesignCLIP on OpenAI's RN50 CLIP — the paper's ResNet baseline backbone (RN101: --config.model.init=RN101.pt).

    # OpenAI's RN50.pt (or open_clip's RN50 directory) with the CLIP tokenizer files (vocab.json, merges.txt,
    # e.g. from any openai/clip-* Hugging Face repo) in the same folder; nothing is downloaded at run time
    python -m designclip_jax.train --config configs/impact_rn50.py --workdir runs/rn50 \
        --config.data.dir=data/impact --config.model.init=/models/openai/RN50.pt
    # the zero-shot baseline, before any fine-tuning
    python -m designclip_jax.eval --checkpoint /models/openai/RN50.pt --data data/impact --split test

The ResNet's BatchNorm keeps OpenAI's statistics (models/resnet.py): scale and bias train, statistics do not.
Hardware as configs/impact_vitb16.py (v4-32, topology v4:2x2x4; bf16, global batch 1024, data parallel);
RN50 has 102M parameters.
Smoke test (any machine): --config.train.steps=5 --config.train.global_batch=8
"""

import importlib.util
import os


def get_config():
  # the ViT-B/16 recipe (same data, batch, schedule), loaded by path so this file runs from any directory
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'impact_vitb16.py')
  spec = importlib.util.spec_from_file_location('impact_vitb16', path)
  vitb16 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(vitb16)
  c = vitb16.get_config()
  c.model.preset = 'RN50'  # shapes come from the checkpoint; the preset names the one expected
  c.model.init = ''  # required: an OpenAI-format RN50 checkpoint (RN50.pt, or open_clip's directory)
  # RN50's step is 2.5x ViT-B/16's rate: ~12,100 samples/s per v4 host at the AOT bound, ~21.5 cores of the
  # pipeline (bench/pipeline_throughput.py); 48 workers give 2.2x
  c.data.worker_count = 48
  return c
