"""One loader for every model source: a training workdir, a Hugging Face CLIP directory or an
OpenAI-format checkpoint -> (CLIP, tokenizer, pixel normalization). Used by eval, bench and any tool
that embeds; it sits below both train and eval so neither imports the other for it."""

from __future__ import annotations

import os

from etils import epath
from flax import nnx

from designclip_jax import paths, sharding
from designclip_jax.data.tokenizer import Tokenizer
from designclip_jax.models import CLIP
from designclip_jax.weights import hf_format, openai_format, run_checkpoints
from designclip_jax.weights.model_spec import SPEC_FILE, ModelSpec


class ModelSourceError(ValueError):
  """A path that holds no loadable model; the message names the path and what was expected."""


def load_model(path: str) -> tuple[CLIP, Tokenizer, str]:
  """(clip model, tokenizer, pixel normalization) from a training workdir (newest checkpoint; everything it
  needs is in the workdir), an HF CLIP directory or an OpenAI-format checkpoint (tokenizer files beside it),
  local or in a bucket (gs://…)."""
  if epath.Path(path, SPEC_FILE).is_file():  # a workdir may be a gs:// URL
    spec = ModelSpec.load(path)
    mngr = run_checkpoints.manager(path, keep=None, read_only=True)
    try:
      if mngr.latest_step() is None:
        raise ModelSourceError(f'{path} holds no checkpoint yet (checkpoints/ is empty)')
      # replicated over every device of every process (fsdp=1): each process holds the whole model, so
      # data-parallel embedding works on several hosts and nothing is fetched from another process
      mesh = sharding.make_mesh(-1, 1)
      graphdef, abstract = nnx.split(nnx.eval_shape(spec.build))
      shardings = sharding.state_shardings(abstract, mesh)
      state, _, _ = run_checkpoints.restore(mngr, mngr.latest_step(), abstract, shardings)
    finally:
      mngr.close()
    return nnx.merge(graphdef, state).clip, spec.tokenizer(path), spec.pixel_normalization
  if paths.is_url(path) and not epath.Path(path).exists():
    raise ModelSourceError(f'{path!r} does not exist')
  with hf_format.local_checkpoint(path) as local:  # a bucket's checkpoint: read from a local copy
    if os.path.isfile(os.path.join(local, 'config.json')) or openai_format.is_openai_checkpoint(local):
      tokenizer_dir = local if os.path.isdir(local) else os.path.dirname(local)
      model = hf_format.from_pretrained(local, tokenizer=Tokenizer.from_pretrained(tokenizer_dir))
      return model, Tokenizer.from_pretrained(tokenizer_dir, model.config.text.context_length), 'clip'
  raise ModelSourceError(f'{path!r} is neither a training workdir ({SPEC_FILE}), a Hugging Face CLIP directory '
                         '(config.json) nor an OpenAI-format checkpoint (.pt/.bin/.safetensors state dict)')
