"""ResNet towers and OpenAI-format checkpoints against OpenAI's own PyTorch CLIP (clip/model.py)."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

import designclip_jax
from designclip_jax.weights import hf_format, openai_format
from tests.openai_reference import make_openai_clip, save_torchscript, text_ids, torch_forward, write_open_clip_config

VOCAB = 99
MODELS = {
    # stage blocks (1, 2, 1, 1): exercises a stride-1 downsample (layer1), a repeated block and strided stages
    'resnet': dict(vision_layers=(1, 2, 1, 1), vision_width=16, image_resolution=64),
    'resnet-96px': dict(vision_layers=(1, 1, 1, 1), vision_width=8, image_resolution=96, transformer_layers=1),
    'vit': dict(vision_layers=2, vision_width=128, image_resolution=32, vision_patch_size=16),
}


def _rel_err(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _inputs(size, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(3, size, size, 3)).astype(np.float32), text_ids(rng, 4, 16, VOCAB)


def _save(model, path, fmt, quick_gelu=True):
  """As open_clip's safetensors directory (its config naming the activation), or as a plain torch state-dict
  file (which does not say)."""
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  if fmt == 'safetensors-dir':
    from safetensors.torch import save_file
    path.mkdir()
    save_file(state, str(path / 'open_clip_model.safetensors'))
    write_open_clip_config(path, quick_gelu)
    return str(path)
  torch.save(state, str(path) + '.bin')
  return str(path) + '.bin'


@pytest.mark.parametrize('fmt', ['safetensors-dir', 'torch-bin'])
@pytest.mark.parametrize('name', sorted(MODELS))
def test_parity_with_openai_clip(tmp_path, name, fmt):
  kwargs = MODELS[name]
  ref = make_openai_clip(vocab_size=VOCAB, **kwargs)
  path = _save(ref, tmp_path / 'ckpt', fmt)
  activation = 'quick_gelu' if fmt == 'torch-bin' else None  # a plain state dict does not say
  model = designclip_jax.from_pretrained(path, activation=activation)
  # shapes only (the safetensors header) give the same
  assert hf_format.load_config(path, activation) == model.config
  assert model.config.vision.is_resnet == isinstance(kwargs['vision_layers'], tuple)
  pixels, ids = _inputs(kwargs['image_resolution'])
  ref_img, ref_txt, ref_logits = torch_forward(ref, pixels, ids)
  assert _rel_err(np.asarray(model.encode_image(jnp.asarray(pixels))), ref_img) <= 1e-5
  assert _rel_err(np.asarray(model.encode_text(jnp.asarray(ids))), ref_txt) <= 1e-5
  assert _rel_err(np.asarray(model(jnp.asarray(pixels), jnp.asarray(ids))), ref_logits) <= 1e-5


@pytest.mark.parametrize('name', ['resnet', 'vit'])
def test_save_openai_round_trip_loads_in_openai_clip(tmp_path, name):
  from safetensors.numpy import load_file
  kwargs = MODELS[name]
  source = make_openai_clip(vocab_size=VOCAB, **kwargs)
  model = designclip_jax.from_pretrained(_save(source, tmp_path / 'src', 'safetensors-dir'))
  designclip_jax.save_openai(model, str(tmp_path / 'out'))
  exported = load_file(str(tmp_path / 'out' / 'open_clip_model.safetensors'))

  target = make_openai_clip(vocab_size=VOCAB, seed=1, **kwargs)  # different weights until loaded
  missing, unexpected = target.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()}, strict=False)
  assert not unexpected
  assert all(k.endswith('num_batches_tracked') for k in missing), missing  # a counter, not a weight
  for key, value in source.state_dict().items():
    if not key.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)
  pixels, ids = _inputs(kwargs['image_resolution'], seed=3)
  for a, b in zip(torch_forward(target, pixels, ids), torch_forward(source, pixels, ids), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  config = json.loads((tmp_path / 'out' / 'open_clip_config.json').read_text())['model_cfg']
  assert config['quick_gelu'] is True and config['embed_dim'] == 32
  assert designclip_jax.from_pretrained(str(tmp_path / 'out')).config == model.config  # the config says it all


def test_gelu_checkpoint_takes_its_activation_from_the_file_or_the_caller(tmp_path):
  """open_clip's GELU models have OpenAI's tensor names: a plain state dict cannot tell GELU from QuickGELU.
  Unless the file or the caller says which, loading is refused; once said, outputs equal torch's GELU model."""
  kwargs = MODELS['vit']
  ref = make_openai_clip(vocab_size=VOCAB, act='gelu', **kwargs)
  pixels, ids = _inputs(kwargs['image_resolution'])
  ref_img, ref_txt, _ = torch_forward(ref, pixels, ids)

  def error(model):
    return max(_rel_err(np.asarray(model.encode_image(jnp.asarray(pixels))), ref_img),
               _rel_err(np.asarray(model.encode_text(jnp.asarray(ids))), ref_txt))

  plain = _save(ref, tmp_path / 'plain', 'torch-bin')
  for load in (designclip_jax.from_pretrained, hf_format.load_config):
    with pytest.raises(ValueError, match=re.escape(plain) + r" does not say which activation.*activation='quick_gelu' "
                       r"or 'gelu'.*open_clip_config\.json"):
      load(plain)
  assert error(designclip_jax.from_pretrained(plain, activation='gelu')) <= 1e-5
  assert error(designclip_jax.from_pretrained(plain, activation='quick_gelu')) > 1e-2  # the old silent answer
  with pytest.raises(ValueError, match="activation 'relu' is not one of"):
    designclip_jax.from_pretrained(plain, activation='relu')

  folder = _save(ref, tmp_path / 'open_clip', 'safetensors-dir', quick_gelu=False)  # open_clip's config says
  model = designclip_jax.from_pretrained(folder)
  assert (model.config.text.act, model.config.vision.act) == ('gelu', 'gelu') and error(model) <= 1e-5
  with pytest.raises(ValueError, match=r'conflicting activations: gelu from .*open_clip_config\.json; quick_gelu from '
                     'the activation argument'):
    designclip_jax.from_pretrained(folder, activation='quick_gelu')
  designclip_jax.save_openai(model, str(tmp_path / 'export'))  # the export says it too
  assert error(designclip_jax.from_pretrained(str(tmp_path / 'export'))) <= 1e-5

  # module class names say (archives of this test's own making: trusted explicitly, see test_untrusted_...)
  scripted = save_torchscript(ref, tmp_path / 'gelu.pt', kwargs['image_resolution'])
  assert error(designclip_jax.from_pretrained(scripted, trust_torchscript=True)) <= 1e-5
  quick = make_openai_clip(vocab_size=VOCAB, **MODELS['resnet-96px'])  # OpenAI's own: QuickGELU
  scripted = save_torchscript(quick, tmp_path / 'quick.pt', MODELS['resnet-96px']['image_resolution'])
  assert hf_format.load_config(scripted, trust_torchscript=True).text.act == 'quick_gelu'


def test_resnet_presets_have_openai_tensor_names_and_shapes():
  """RN50 / RN101 as OpenAI builds them (vocab 49408, context 77): the same tensors with the same shapes."""
  from flax import nnx
  from designclip_jax.models import CLIP, preset
  from tests.openai_reference import openai_model_module
  module = openai_model_module()
  for name, layers, embed in (('RN50', (3, 4, 6, 3), 1024), ('RN101', (3, 4, 23, 3), 512)):
    with torch.device('meta'):
      ref = module.CLIP(embed, 224, layers, 64, None, 77, 49408, 512, 8, 12)
    theirs = openai_format.to_hf_names({k: np.empty(v.shape, np.float32) for k, v in ref.state_dict().items()})
    abstract = nnx.eval_shape(lambda name=name: CLIP(preset(name), rngs=nnx.Rngs(0)))
    ours = {}
    for flat_name, leaf in hf_format._flat_params(abstract).items():
      hf_name, to_hf, _ = hf_format._hf_name(flat_name)
      ours[hf_name] = to_hf(np.empty(leaf.shape, np.float32)).shape
    assert ours == {k: v.shape for k, v in theirs.items()}, name


def test_save_pretrained_refuses_a_resnet_and_bad_files_are_named(tmp_path):
  ref = make_openai_clip(vocab_size=VOCAB, **MODELS['resnet'])
  model = designclip_jax.from_pretrained(_save(ref, tmp_path / 'ckpt', 'safetensors-dir'))
  with pytest.raises(ValueError, match='save_openai'):
    designclip_jax.save_pretrained(model, str(tmp_path / 'hf'))
  from designclip_jax.models import CLIP, preset
  from flax import nnx
  # gelu, 4 heads of 32; abstract (eval_shape): the refusal comes before any weight is read
  tiny = nnx.eval_shape(lambda: CLIP(preset('tiny', text_layers=1, vision_layers=1), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"text heads 4 != width 128 / 64; vision heads 4 != width 128 / 64\."):
    designclip_jax.save_openai(tiny, str(tmp_path / 'tiny'))
  mixed = preset('tiny', text_heads=2, vision_heads=2, vision_act='quick_gelu')
  assert openai_format.format_mismatches(mixed) == [
      "vision act 'quick_gelu': the format has one activation for both towers, one of ('quick_gelu', 'gelu')"]
  from safetensors.numpy import save_file
  save_file({'weight': np.zeros(3, np.float32)}, str(tmp_path / 'other.safetensors'))
  with pytest.raises(ValueError, match='other.safetensors is not an OpenAI-format CLIP'):
    designclip_jax.from_pretrained(str(tmp_path / 'other.safetensors'))
  (tmp_path / 'notes.pt').write_text('not a checkpoint')
  with pytest.raises(ValueError, match='notes.pt is not a PyTorch checkpoint'):
    designclip_jax.from_pretrained(str(tmp_path / 'notes.pt'))


def test_openai_allowlist_is_the_hashes_of_clip_load():
  """The SHA-256 allowlist equals the hashes in the download URLs of the openai-clip package's clip/clip.py
  (_MODELS), the ones its _download checks; read from the file, not imported (it imports torchvision)."""
  from tests.openai_reference import openai_model_module
  source = open(openai_model_module().__file__.replace('model.py', 'clip.py')).read()
  urls = re.findall(r'"(https://openaipublic[^"]+)"', source[source.index('_MODELS'):])
  assert len(urls) == 9
  assert openai_format.OPENAI_RELEASED_SHA256 == {u.split('/')[-2]: u.split('/')[-1] for u in urls}


class _WritesAMarker:
  """A pickled object whose unpickling runs code: it writes ``marker``."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return exec, (f'open({self.marker!r}, "w").write("code ran")',)


class _ScriptedCode(torch.nn.Module):
  """A TorchScript module whose __setstate__, run by torch.jit.load, prints: code inside an archive."""

  def __init__(self):
    super().__init__()
    self.weight = torch.zeros(3)

  def forward(self, x):
    return x + self.weight

  @torch.jit.export
  def __getstate__(self):
    return (self.weight, self.training)

  @torch.jit.export
  def __setstate__(self, state: tuple[torch.Tensor, bool]):
    print('code in the archive ran')
    self.weight = state[0]
    self.training = state[1]


def _refused(path, expected, **kwargs):
  with pytest.raises(ValueError) as e:
    designclip_jax.from_pretrained(path, **kwargs)
  assert str(e.value).startswith(path) and expected in str(e.value), str(e.value)
  assert '\n' not in str(e.value)


def test_untrusted_files_are_refused_before_any_of_their_code_runs(tmp_path, capfd, monkeypatch):
  """Pickles that run code and TorchScript archives that are not OpenAI's released files are refused in one
  line, and nothing in them runs; OpenAI's files (by SHA-256) and archives trusted explicitly load."""
  marker = tmp_path / 'marker'
  evil = str(tmp_path / 'evil.pt')
  torch.save({'token_embedding.weight': _WritesAMarker(marker)}, evil)
  _refused(evil, 'is not a PyTorch checkpoint of tensors (torch.load(weights_only=True) refused it: '
           'UnpicklingError: Unsupported global: GLOBAL exec was not an allowed global by default)')
  assert not marker.exists()

  scripted = str(tmp_path / 'scripted.pt')
  torch.jit.save(torch.jit.script(_ScriptedCode()), scripted)
  _refused(scripted, "is a TorchScript archive (code that runs as it loads) and not one of OpenAI's released CLIP "
           'files (by SHA-256): refused')
  assert 'code in the archive ran' not in capfd.readouterr().out
  _refused(scripted, 'is not an OpenAI-format CLIP state dict', trust_torchscript=True)  # asked for: it runs
  assert 'code in the archive ran' in capfd.readouterr().out

  kwargs = MODELS['resnet-96px']
  ref = make_openai_clip(vocab_size=VOCAB, **kwargs)
  clip_archive = save_torchscript(ref, tmp_path / 'RN.pt', kwargs['image_resolution'])
  _refused(clip_archive, 'refused')
  monkeypatch.setitem(openai_format.OPENAI_RELEASED_SHA256, openai_format.sha256(clip_archive), 'RN.pt')
  model = designclip_jax.from_pretrained(clip_archive)  # as if it were one of OpenAI's files: no flag needed
  pixels, ids = _inputs(kwargs['image_resolution'])
  assert _rel_err(np.asarray(model.encode_image(jnp.asarray(pixels))), torch_forward(ref, pixels, ids)[0]) <= 1e-5


def test_batch_statistics_mode_matches_torch_batchnorm_in_train_mode(tmp_path):
  """model.batchnorm='batch' in training mode: the features and the updated running statistics of every
  BatchNorm equal OpenAI's PyTorch model after one forward pass in train() mode."""
  from flax import nnx
  from designclip_jax.models import CLIP
  kwargs = MODELS['resnet']
  ref = make_openai_clip(vocab_size=VOCAB, **kwargs)
  loaded = designclip_jax.from_pretrained(_save(ref, tmp_path / 'ckpt', 'safetensors-dir'))
  model = CLIP(loaded.config, batchnorm='batch', rngs=nnx.Rngs(0))
  nnx.update(model, nnx.state(loaded))
  pixels, _ = _inputs(kwargs['image_resolution'])
  eval_features = np.asarray(model.encode_image(jnp.asarray(pixels)))  # eval mode: stored statistics
  assert _rel_err(eval_features, np.asarray(loaded.encode_image(jnp.asarray(pixels)))) <= 1e-6

  model.train()
  ours = np.asarray(model.encode_image(jnp.asarray(pixels)))
  ref.train()
  with torch.no_grad():
    theirs = ref.encode_image(torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))).numpy()
  assert _rel_err(ours, theirs) <= 1e-5
  assert _rel_err(ours, eval_features) > 1e-2  # batch statistics really were used
  exported = openai_format.from_hf_names(hf_format.params_to_hf(model))
  stats = [k for k in ref.state_dict() if k.endswith(('running_mean', 'running_var'))]
  assert len(stats) == 2 * 22  # every BN layer: 3 in the stem, 3 in each of 5 bottlenecks, 4 downsamples
  for key in stats:
    np.testing.assert_allclose(exported[key], ref.state_dict()[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
