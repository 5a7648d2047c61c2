"""Drawing-sheet preprocessing: crop to the drawing, drop the 'FIG. N' label, pad to square, resize.

Patent sheets are tall 1-bit scans (e.g. 953x2306) with thin lines; naive down-scaling to 224 px
erases them, so ink is thickened in proportion to the reduction before an area-averaging resize.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

INK_THRESHOLD = 128
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
# Drawings past this many pixels are refused before decoding: a 45 KB PNG can declare 200 megapixels (a
# decompression bomb). A letter-size sheet scanned at 600 dpi is 34 MP; IMPACT's sheets are about 2 MP.
MAX_PIXELS = 50_000_000


class ImageTooLargeError(ValueError):
  """An image whose header declares more than ``MAX_PIXELS`` pixels; nothing of it was decoded."""


def open_image(data: bytes | str) -> Image.Image:
  """Open TIFF / PNG / JPEG bytes or a path, reading only the header; past ``MAX_PIXELS`` it is refused."""
  try:
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
  except Image.DecompressionBombError:  # PIL's own limit, 2 x Image.MAX_IMAGE_PIXELS, is far past ours
    image, size = None, f'more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels'
  else:
    size = f'{image.width:,} x {image.height:,} pixels'
  if image is None or image.width * image.height > MAX_PIXELS:
    if image is not None:
      image.close()
    where = '' if isinstance(data, bytes) else f'{data}: '
    raise ImageTooLargeError(f'{where}{size} is past the limit of {MAX_PIXELS / 1e6:g} megapixels (a decompression '
                             'bomb or a needlessly fine scan; designclip_jax.data.images.MAX_PIXELS)')
  return image


def load_gray(data: bytes | str) -> Image.Image:
  """Open TIFF / PNG / JPEG bytes or a path as 8-bit grayscale (ink dark on white); see ``open_image``."""
  image = open_image(data)
  image.load()
  return image.convert('L')


def _ink_bands(ink_rows: np.ndarray, min_gap: int) -> list[tuple[int, int]]:
  """Runs of inked rows, merging runs separated by fewer than ``min_gap`` blank rows."""
  rows = np.flatnonzero(ink_rows)
  if rows.size == 0:
    return []
  breaks = np.flatnonzero(np.diff(rows) > min_gap)
  starts = np.concatenate([[rows[0]], rows[breaks + 1]])
  ends = np.concatenate([rows[breaks], [rows[-1]]]) + 1
  return list(zip(starts.tolist(), ends.tolist()))


def drawing_box(gray: np.ndarray) -> tuple[int, int, int, int] | None:
  """(top, bottom, left, right) of the drawing, ignoring a small text band (the figure label) at the
  top or bottom of the sheet. None for a blank image."""
  ink = gray < INK_THRESHOLD
  h, w = ink.shape
  bands = _ink_bands(ink.any(axis=1), min_gap=max(2, h // 40))
  if not bands:
    return None

  def is_label(band):
    top, bottom = band
    cols = np.flatnonzero(ink[top:bottom].any(axis=0))
    return (bottom - top) < 0.06 * h and (cols[-1] - cols[0] + 1) < 0.4 * w

  if len(bands) > 1 and is_label(bands[-1]):
    bands = bands[:-1]
  if len(bands) > 1 and is_label(bands[0]):
    bands = bands[1:]
  top, bottom = bands[0][0], bands[-1][1]
  cols = np.flatnonzero(ink[top:bottom].any(axis=0))
  return top, bottom, int(cols[0]), int(cols[-1]) + 1


def preprocess_sheet(image: Image.Image, size: int, margin: float = 0.04) -> np.ndarray:
  """Grayscale drawing -> (size, size) uint8: cropped to the drawing, aspect kept, padded white."""
  gray = np.asarray(image.convert('L'))
  box = drawing_box(gray)
  if box is not None:
    top, bottom, left, right = box
    gray = gray[top:bottom, left:right]
  side = int(max(gray.shape) * (1 + 2 * margin)) + 1
  canvas = np.full((side, side), 255, np.uint8)
  y, x = (side - gray.shape[0]) // 2, (side - gray.shape[1]) // 2
  canvas[y:y + gray.shape[0], x:x + gray.shape[1]] = gray
  factor = int(side / size / 2)
  if factor >= 2:  # min-pool first: thin lines survive the reduction as visible strokes
    side = side // factor * factor
    canvas = canvas[:side, :side].reshape(side // factor, factor, side // factor, factor).min(axis=(1, 3))
  square = Image.fromarray(canvas)
  resample = Image.Resampling.BOX if square.size[0] >= size else Image.Resampling.BICUBIC
  return np.asarray(square.resize((size, size), resample))


def encode_png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format='PNG', optimize=False, compress_level=1)
  return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert('L'))


# 'clip': OpenAI CLIP's statistics (required by pretrained weights). 'sketch': paper white -> 0 and
# ink -> -2, for towers trained from scratch: under 'clip' normalisation the white background is a
# large constant that makes every drawing embed alike at initialisation and stalls contrastive
# learning (the synthetic_tiny loss sat at ln(batch) for 100+ steps; with 'sketch' it falls at once).
# Each is (mean, std) per RGB channel of pixels scaled to [0, 1].
PIXEL_STATS = {
    'clip': (CLIP_MEAN, CLIP_STD),
    'sketch': (np.full(3, 1.0, np.float32), np.full(3, 0.5, np.float32)),
}
PIXEL_NORMALIZATIONS = tuple(PIXEL_STATS)


def check_normalization(normalization: str) -> str:
  if normalization not in PIXEL_STATS:
    raise ValueError(f'pixel normalization {normalization!r} is not one of {PIXEL_NORMALIZATIONS}')
  return normalization


def fit(gray: np.ndarray, size: int) -> np.ndarray:
  """uint8 (h, w) drawing -> uint8 (size, size, 1): the one grey channel the pipeline ships (drawings are
  1-bit line art; normalisation and the RGB repeat happen on the device, see ``normalize``)."""
  if gray.shape != (size, size):
    gray = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BOX))
  return gray[..., None]


def normalize(pixels, normalization: str):
  """uint8 (..., 1) grey pixels -> float32 (..., 3) model input. NumPy or JAX arrays alike (only array
  methods and broadcasting against the per-channel statistics, which repeats the channel): the jitted train
  step and eval embedding call it on the device."""
  mean, std = PIXEL_STATS[check_normalization(normalization)]
  if pixels.dtype != np.uint8 or pixels.shape[-1:] != (1,):
    raise TypeError(f'pixels must be uint8 with one grey channel last (as data.pipeline ships them), '
                    f'got {pixels.dtype} {tuple(pixels.shape)}')
  return (pixels.astype(np.float32) / np.float32(255.0) - mean) / std
