"""Everything needed to rebuild a run's model, kept in the run's workdir: ``model.json`` (the spec) and
``tokenizer/`` (a copy of its tokenizer), so the eval CLI and search restore a training checkpoint without the
training config, the data set or the checkpoint the run started from — on another machine, in another folder or
bucket. Where the tokenizer and the initial weights came from is recorded as provenance only."""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
from etils import epath
from flax import nnx

from designclip_jax.weights import hf_format
from designclip_jax.weights.run_checkpoints import absolute
from designclip_jax.data.tokenizer import Tokenizer
from designclip_jax.models import CLIP, CLIPConfig, TextConfig, VisionConfig, preset
from designclip_jax.models.designclip import DesignCLIP

SPEC_FILE = 'model.json'
TOKENIZER_DIR = 'tokenizer'  # the run's own copy of its tokenizer, beside model.json
# Model settings a run fixes when it starts (its checkpoints hold them); a resumed run's config must agree.
_FIXED_AT_START = ('head', 'fusion_width', 'fusion_layers', 'fusion_heads', 'pixel_normalization', 'batchnorm')


class ResumeMismatchError(ValueError):
  """A resumed run's config or data set contradicts what its checkpoints hold; the message names the setting."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  clip: CLIPConfig
  num_classes: int
  # Where the tokenizer was copied from (provenance). Runs saved before workdirs held their own copy load it
  # from here (an absolute path then).
  tokenizer_dir: str = ''
  head: str = 'fusion'
  fusion_width: int = 256
  fusion_layers: int = 1
  fusion_heads: int = 4
  dtype: str = 'float32'
  remat: bool = False
  pretrained: str = ''  # model.init as given (HF directory or OpenAI format; '' = random init): provenance only
  pixel_normalization: str = 'clip'  # data.images.PIXEL_NORMALIZATIONS
  batchnorm: str = 'frozen'  # ResNet towers only: models.resnet.BATCHNORM_MODES
  label: str = 'uspc'  # the label scheme (data.label) the fusion head's num_classes index: data.classes.LABEL_SCHEMES

  def tokenizer(self, workdir) -> Tokenizer:
    """The run's tokenizer: its copy in ``workdir``, or, for a run saved before workdirs held one, the
    folder ``tokenizer_dir`` names."""
    own = absolute(workdir) / TOKENIZER_DIR
    if own.is_dir():
      return Tokenizer.from_pretrained(str(own), self.clip.text.context_length)
    if not self.tokenizer_dir:
      raise FileNotFoundError(f'{own} does not exist: the run {workdir} holds no tokenizer')
    return Tokenizer.from_pretrained(self.tokenizer_dir, self.clip.text.context_length)

  def build(self, seed: int = 0) -> DesignCLIP:
    dtype = jnp.dtype(self.dtype)
    clip = CLIP(self.clip, dtype=dtype, remat=self.remat, batchnorm=self.batchnorm, rngs=nnx.Rngs(seed))
    return DesignCLIP(clip, self.num_classes, head=self.head, fusion_width=self.fusion_width,
                      fusion_layers=self.fusion_layers, fusion_heads=self.fusion_heads, dtype=dtype,
                      rngs=nnx.Rngs(seed + 1))

  def save(self, workdir, tokenizer: Tokenizer | None = None) -> None:
    """model.json, and with ``tokenizer`` the workdir's copy of it (replacing any earlier copy)."""
    workdir = absolute(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
      own = workdir / TOKENIZER_DIR
      if own.exists():
        own.rmtree()
      tokenizer.save(own)
    (workdir / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

  @classmethod
  def load(cls, workdir) -> 'ModelSpec':
    raw = json.loads((absolute(workdir) / SPEC_FILE).read_text())
    c = raw.pop('clip')
    clip = CLIPConfig(vision=VisionConfig(**c.pop('vision')), text=TextConfig(**c.pop('text')), **c)
    return cls(clip=clip, **raw)

  def resumed_with(self, model_cfg, num_classes: int, label: str = 'uspc') -> 'ModelSpec':
    """This saved spec as a resumed run uses it: the config's compute settings (dtype, remat) apply; what the
    checkpoints hold (tower shapes, head, classes, normalisation) was fixed when the run started, and a config
    or data set that says otherwise is refused. model.init is not read again (it may be gone)."""
    for field in _FIXED_AT_START:
      if getattr(self, field) != model_cfg[field]:
        raise ResumeMismatchError(f'the run was started with model.{field}={getattr(self, field)!r} but the config says '
                         f'{model_cfg[field]!r}: resume with the run\'s setting, or start a new workdir')
    if self.label != label:
      raise ResumeMismatchError(f'the run was started with data.label={self.label!r} but the config says {label!r}: '
                                'resume with the run\'s setting, or start a new workdir')
    if self.num_classes != num_classes:
      raise ResumeMismatchError(f'the run was started on a data set of {self.num_classes} classes; this one has '
                       f'{num_classes}: resume on the same data set, or start a new workdir')
    return dataclasses.replace(self, dtype=model_cfg.dtype, remat=model_cfg.remat)


def start_from_config(model_cfg, num_classes: int, data_tokenizer_dir: str,
                      label: str = 'uspc') -> tuple[ModelSpec, Tokenizer, dict | None]:
  """A new run's spec, tokenizer and initial tower tensors (HF names; None for random towers); its fusion head
  has ``num_classes`` outputs, the classes of the label scheme ``label``.

  With model.init (an HF directory or an OpenAI-format checkpoint, local or in a bucket) the tower shapes, the
  tensors and the tokenizer (files in the checkpoint's folder) come from it, read once; without, the preset is
  sized to the data set's tokenizer. Both sources are recorded as given, as provenance."""
  if not model_cfg.init:
    tokenizer = Tokenizer.from_pretrained(data_tokenizer_dir)
    clip = preset(model_cfg.preset, **dict(model_cfg.overrides)).replace(
        text_vocab_size=tokenizer.vocab_size, text_eos_token_id=tokenizer.eos_token_id)
    tensors, tokenizer_source = None, data_tokenizer_dir
  else:
    with hf_format.local_checkpoint(model_cfg.init) as init:
      tokenizer = Tokenizer.from_pretrained(init if os.path.isdir(init) else os.path.dirname(init))
      clip, tensors = hf_format.read_checkpoint(init)
    clip = hf_format.pool_at_tokenizer_eos(clip, tokenizer)
    tokenizer_source = model_cfg.init if epath.Path(model_cfg.init).is_dir() else os.path.dirname(model_cfg.init)
  spec = ModelSpec(clip=clip, num_classes=num_classes, tokenizer_dir=str(absolute(tokenizer_source)),
                   head=model_cfg.head, fusion_width=model_cfg.fusion_width, fusion_layers=model_cfg.fusion_layers,
                   fusion_heads=model_cfg.fusion_heads, dtype=model_cfg.dtype, remat=model_cfg.remat,
                   pretrained=str(absolute(model_cfg.init)) if model_cfg.init else '',
                   pixel_normalization=model_cfg.pixel_normalization, batchnorm=model_cfg.batchnorm, label=label)
  return spec, Tokenizer(tokenizer.hf, clip.text.context_length), tensors
