"""Caption tokenizer: a checkpoint's own CLIP tokenizer, or a small BPE trained on the synthetic set.

Both are wrapped by ``Tokenizer`` so the rest of the code sees one interface: a batch of strings in,
an int32 (B, context_length) array out, ``<|startoftext|> … <|endoftext|>`` padded with the EOS id as
transformers' CLIPTokenizer does (the text tower pools at the first EOS).
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable, Sequence

import numpy as np

from designclip_jax import paths

BOS, EOS = '<|startoftext|>', '<|endoftext|>'
# What transformers' AutoTokenizer reads from a folder (config.json names the model type when
# tokenizer_config.json does not name the class); a checkpoint's weights beside them are not needed.
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json',
                   'vocab.json', 'merges.txt', 'config.json')


class Tokenizer:

  def __init__(self, hf_tokenizer, context_length: int):
    self.hf = hf_tokenizer
    self.context_length = context_length

  @classmethod
  def from_pretrained(cls, path: str, context_length: int = 77) -> 'Tokenizer':
    from transformers import AutoTokenizer  # pylint: disable=import-outside-toplevel
    path = os.fspath(path)
    if paths.is_url(path):  # transformers reads local folders only: load a bucket's (gs://…) files from a copy
      with paths.local_folder(path, TOKENIZER_FILES) as local:
        if not os.listdir(local):
          raise FileNotFoundError(f'no tokenizer files ({", ".join(TOKENIZER_FILES[:2])}, ...) in {path}')
        return cls.from_pretrained(local, context_length)
    if not os.path.isdir(path):
      raise FileNotFoundError(f'tokenizer directory {path!r} does not exist')
    try:
      hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
      raise FileNotFoundError(f'no tokenizer files (tokenizer.json, or vocab.json + merges.txt) in {path}: {e}') from e
    return cls(hf, context_length)

  @property
  def eos_token_id(self) -> int:
    return int(self.hf.eos_token_id)

  @property
  def vocab_size(self) -> int:
    return len(self.hf)

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    ids = self.hf(list(texts), padding='max_length', truncation=True, max_length=self.context_length)['input_ids']
    return np.asarray(ids, dtype=np.int32)

  def save(self, path) -> None:
    """The tokenizer's files into the folder ``path`` (local or a bucket URL), which from_pretrained reads."""
    if not paths.is_url(path):
      self.hf.save_pretrained(os.fspath(path))
      return
    with tempfile.TemporaryDirectory(prefix='designclip-tokenizer-') as local:
      self.hf.save_pretrained(local)
      paths.upload_folder(local, path)


def train_bpe(texts: Iterable[str], vocab_size: int, context_length: int) -> Tokenizer:
  """Train a lower-cased byte-level BPE with CLIP's special tokens (BOS id 0, EOS/pad id 1)."""
  from tokenizers import Tokenizer as RawTokenizer  # pylint: disable=import-outside-toplevel
  from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel

  raw = RawTokenizer(models.BPE(unk_token=None))
  raw.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  raw.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS], show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  raw.train_from_iterator(texts, trainer)
  raw.post_processor = processors.TemplateProcessing(single=f'{BOS} $A {EOS}',
                                                     special_tokens=[(BOS, 0), (EOS, 1)])
  hf = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                               model_max_length=context_length)
  return Tokenizer(hf, context_length)
