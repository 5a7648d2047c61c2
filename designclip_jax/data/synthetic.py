"""Embedded synthetic design-patent set in the IMPACT layout (CSV + 1-bit group-4 TIFF sheets).

Each of the 33 USPC design classes is a family of procedural 3D objects: a class template fixes which
primitive parts an object has and their typical proportions; every patent draws its own sizes,
offsets and optional parts, so two patents of a class differ visibly while all views of one patent
show the same object. Objects are drawn as black-on-white orthographic line drawings (front, rear,
left, right, top, bottom, perspective) with one part sometimes dashed (unclaimed), like USPTO sheets.
Class sizes follow IMPACT's long tail. Same arguments -> byte-identical files.

    python -m designclip_jax.data.synthetic --out /tmp/synth --patents 2000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from designclip_jax.data.classes import CLASS_CODES, USPC_DESIGN_CLASSES
from designclip_jax.data.impact import IMPACT_COLUMNS
from designclip_jax.data.parallel import ordered_map

# Object nouns per class, used for titles and captions.
NOUNS: dict[str, tuple[str, ...]] = {
    'D1': ('candy bar', 'pastry'), 'D2': ('shoe', 'hat'), 'D3': ('handbag', 'wallet'), 'D4': ('toothbrush', 'brush'),
    'D5': ('fabric panel', 'paper sheet'), 'D6': ('chair', 'table'), 'D7': ('kettle', 'blender'),
    'D8': ('wrench', 'hinge'), 'D9': ('bottle', 'container'), 'D10': ('thermometer', 'meter'),
    'D11': ('pendant', 'ring'), 'D12': ('wheel', 'vehicle'), 'D13': ('battery charger', 'power adapter'),
    'D14': ('smartphone', 'speaker'), 'D15': ('machine housing', 'pump'), 'D16': ('camera', 'lens'),
    'D17': ('guitar', 'drum'), 'D18': ('printer', 'label maker'), 'D19': ('pen', 'stapler'),
    'D20': ('display stand', 'vending machine'), 'D21': ('toy', 'game piece'), 'D22': ('fishing reel', 'holster'),
    'D23': ('faucet', 'fan'), 'D24': ('syringe', 'inhaler'), 'D25': ('building panel', 'brick'),
    'D26': ('lamp', 'light fixture'), 'D27': ('vaporizer', 'ashtray'), 'D28': ('razor', 'cosmetic case'),
    'D29': ('helmet', 'respirator'), 'D30': ('pet feeder', 'animal cage'), 'D32': ('washing machine', 'mop'),
    'D34': ('cart', 'hand truck'), 'D99': ('ornament', 'novelty article'),
}
FUNCTIONS = {code: name.lower() for code, name, _ in USPC_DESIGN_CLASSES}
VIEW_ORDER = ('perspective', 'front', 'rear', 'left', 'right', 'top', 'bottom')
VIEW_PHRASES = {
    'perspective': ('perspective view', 'front left perspective view', 'top perspective view'),
    'front': ('front view', 'front elevational view'), 'rear': ('rear view', 'back view'),
    'left': ('left side view', 'left side elevational view'), 'right': ('right side view', 'right elevational view'),
    'top': ('top view', 'top plan view'), 'bottom': ('bottom view', 'bottom plan view'),
}
PRIMITIVES = ('box', 'cylinder', 'cone', 'sphere', 'ring')
SHEET_SIZE = (360, 540)  # tall, like the real 953x2306 sheets
COVER_SIZE = 400


@dataclasses.dataclass(frozen=True)
class Part:
  kind: str
  center: tuple[float, float, float]
  size: tuple[float, float, float]
  axis: int  # 0, 1, 2: the axis a cylinder, cone or ring is built around


def class_template(label: int, n_parts_range=(2, 5)) -> list[tuple[Part, float]]:
  """The part layout shared by a class's objects: (typical part, probability the part is present)."""
  rng = np.random.default_rng([7919, label])
  parts = []
  body_kind = PRIMITIVES[label % 4]
  body_size = tuple(rng.uniform(0.5, 1.5, 3).round(3))
  parts.append((Part(body_kind, (0.0, 0.0, 0.0), body_size, int(rng.integers(3))), 1.0))
  for _ in range(int(rng.integers(*n_parts_range))):
    kind = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
    face = int(rng.integers(3))
    sign = rng.choice([-1.0, 1.0])
    center = list(rng.uniform(-0.3, 0.3, 3) * np.array(body_size))
    size = tuple(rng.uniform(0.15, 0.7, 3).round(3))
    center[face] = sign * (body_size[face] + size[face]) / 2 * 0.9  # attached to the body's face
    parts.append((Part(kind, tuple(np.round(center, 3)), size, int(rng.integers(3))), float(rng.uniform(0.5, 1.0))))
  return parts


def sample_object(label: int, rng: np.random.Generator, jitter: float = 0.25) -> list[Part]:
  """One patent's object: the class template with its own proportions and optional parts."""
  stretch = np.exp(rng.normal(0, jitter, 3))
  parts = []
  for i, (part, keep) in enumerate(class_template(label)):
    if i and rng.random() > keep:
      continue
    size = np.array(part.size) * stretch * np.exp(rng.normal(0, jitter, 3))
    center = np.array(part.center) * stretch + rng.normal(0, jitter * 0.2, 3)
    parts.append(Part(part.kind, tuple(center), tuple(size), part.axis))
  return parts


def _circle(radius_a, radius_b, axis, center, n=20):
  t = np.linspace(0, 2 * np.pi, n + 1)
  pts = np.zeros((n + 1, 3))
  u, v = [a for a in range(3) if a != axis]
  pts[:, u] = radius_a * np.cos(t)
  pts[:, v] = radius_b * np.sin(t)
  return pts + center


def part_polylines(part: Part) -> list[np.ndarray]:
  """A part as 3D polylines (wireframe edges)."""
  c = np.array(part.center)
  s = np.array(part.size) / 2
  if part.kind == 'box':
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * s + c
    edges = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    return [corners[[a, b]] for a, b in edges]
  u, v = [a for a in range(3) if a != part.axis]
  if part.kind == 'sphere':
    r = s.mean()
    return [_circle(r, r, a, c) for a in range(3)]
  offset = np.zeros(3)
  offset[part.axis] = s[part.axis]
  if part.kind == 'ring':
    return [_circle(s[u], s[v], part.axis, c), _circle(s[u] * 0.6, s[v] * 0.6, part.axis, c)]
  top_scale = 0.25 if part.kind == 'cone' else 1.0
  bottom = _circle(s[u], s[v], part.axis, c - offset)
  top = _circle(s[u] * top_scale, s[v] * top_scale, part.axis, c + offset)
  lines = [bottom, top]
  for k in (0, 5, 10, 15):
    lines.append(np.stack([bottom[k], top[k]]))
  return lines


def _rotation(view: str) -> np.ndarray:
  def rx(a):
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])

  def ry(a):
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])

  return {
      'front': np.eye(3), 'rear': ry(math.pi), 'left': ry(math.pi / 2), 'right': ry(-math.pi / 2),
      'top': rx(math.pi / 2), 'bottom': rx(-math.pi / 2),
      'perspective': rx(math.radians(25)) @ ry(math.radians(-35)),
  }[view]


def _dashed(draw, pts, width):
  for a, b in zip(pts[:-1], pts[1:]):
    length = float(np.hypot(*(b - a)))
    steps = max(1, int(length / 6))
    for i in range(0, steps, 2):
      p = a + (b - a) * i / steps
      q = a + (b - a) * min(i + 1, steps) / steps
      draw.line([tuple(p), tuple(q)], fill=0, width=width)


def draw_view(parts: list[Part], view: str, size: tuple[int, int], dashed_part: int, label: str | None,
              box: tuple[int, int, int, int]) -> Image.Image:
  """Render one orthographic view into ``box`` (left, top, right, bottom) of a new 1-bit sheet."""
  image = Image.new('1', size, 1)
  draw = ImageDraw.Draw(image)
  rot = _rotation(view)
  projected = [[(line @ rot.T)[:, :2] * np.array([1, -1]) for line in part_polylines(p)] for p in parts]
  allpts = np.concatenate([l for lines in projected for l in lines])
  lo, hi = allpts.min(0), allpts.max(0)
  left, top, right, bottom = box
  scale = min((right - left) / max(hi[0] - lo[0], 1e-6), (bottom - top) / max(hi[1] - lo[1], 1e-6))
  shift = np.array([(left + right) / 2, (top + bottom) / 2]) - (lo + hi) / 2 * scale
  for i, lines in enumerate(projected):
    for line in lines:
      pts = line * scale + shift
      if i == dashed_part:
        _dashed(draw, pts, 1)
      else:
        draw.line([tuple(p) for p in pts], fill=0, width=2)
  if label:
    draw.text(((left + right) / 2 - 14, size[1] - 40), label, fill=0)
  return image


def _tiff(image: Image.Image) -> bytes:
  buf = io.BytesIO()
  image.save(buf, format='TIFF', compression='group4')
  return buf.getvalue()


def _describe(parts: list[Part]) -> str:
  body = parts[0]
  sx, sy, sz = body.size
  height = 'tall' if sy > 1.3 * max(sx, sz) else 'flat' if sy < 0.6 * max(sx, sz) else 'compact'
  shape = {'box': 'rectangular', 'cylinder': 'cylindrical', 'cone': 'tapered', 'sphere': 'rounded',
           'ring': 'ring-shaped'}[body.kind]
  extras = [p.kind for p in parts[1:]]
  if not extras:
    return f'It has a {height} {shape} body with no attachments.'
  counts = {k: extras.count(k) for k in dict.fromkeys(extras)}
  nouns = {'box': 'rectangular block', 'cylinder': 'cylindrical post', 'cone': 'conical tip',
           'sphere': 'round knob', 'ring': 'circular ring'}
  words = ', '.join(f'{n} {nouns[k]}{"s" if n > 1 else ""}' for k, n in counts.items())
  return f'It has a {height} {shape} body with {words} attached.'


NUMBER_WORDS = ('no', 'one', 'two', 'three', 'four', 'five', 'six')


def make_patent(index: int, label: int, seed: int) -> tuple[dict[str, str], dict[str, bytes]]:
  """One patent: its CSV row and its image files (name -> TIFF bytes)."""
  rng = np.random.default_rng([seed, index])
  code = CLASS_CODES[label]
  patent_num = 900000 + index
  date = f'2021{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}'
  stem = f'USD0{patent_num}-{date}'
  noun = NOUNS[code][int(rng.integers(len(NOUNS[code])))]
  title = noun.capitalize()
  parts = sample_object(label, rng)
  dashed = int(rng.integers(1, len(parts))) if len(parts) > 1 and rng.random() < 0.3 else -1
  n_views = int(rng.integers(3, 8))
  views = ['perspective'] + sorted(rng.choice(VIEW_ORDER[1:], n_views - 1, replace=False).tolist(),
                                   key=VIEW_ORDER.index)
  fig_desc = []
  for i, v in enumerate(views):
    phrase = VIEW_PHRASES[v][int(rng.integers(len(VIEW_PHRASES[v])))]
    tail = f'of the {noun} showing my new design;' if i == 0 else 'thereof;'
    if i == len(views) - 1:
      tail = tail.rstrip(';') + '.'
    fig_desc.append(f'FIG. {i + 1} is a {phrase} {tail}')
  # mostly one figure per sheet; sometimes the last two figures share a sheet (IMPACT does this too)
  two_on_last = len(views) >= 4 and rng.random() < 0.15
  sheet_figs = [[i] for i in range(len(views) - 2)] + ([[len(views) - 2, len(views) - 1]] if two_on_last
                                                        else [[len(views) - 2], [len(views) - 1]])
  w, h = SHEET_SIZE
  files = {f'{stem}-D00000.TIF': _tiff(draw_view(parts, 'perspective', (COVER_SIZE, COVER_SIZE), dashed, None,
                                                 (12, 12, COVER_SIZE - 12, COVER_SIZE - 12)))}
  for s, figs in enumerate(sheet_figs, start=1):
    if len(figs) == 1:
      sheet = draw_view(parts, views[figs[0]], (w, h), dashed, f'FIG. {figs[0] + 1}', (30, 60, w - 30, h - 80))
    else:  # two figures stacked on one sheet
      upper = draw_view(parts, views[figs[0]], (w, h // 2), dashed, f'FIG. {figs[0] + 1}', (30, 20, w - 30, h // 2 - 50))
      lower = draw_view(parts, views[figs[1]], (w, h // 2), dashed, f'FIG. {figs[1] + 1}', (30, 20, w - 30, h // 2 - 50))
      sheet = Image.new('1', (w, h), 1)
      sheet.paste(upper, (0, 0))
      sheet.paste(lower, (0, h // 2))
    files[f'{stem}-D{s:05d}.TIF'] = _tiff(sheet)
  function = FUNCTIONS[code]
  article = 'an' if noun[0] in 'aeiou' else 'a'
  caption = (f' The image is a black and white line drawing of {article} {noun}. {_describe(parts)} '
             f'The drawing shows {NUMBER_WORDS[len(parts)]} main parts. '
             f'Its function relates to {function}.')
  number = int(code[1:])
  subclass = int(rng.integers(100, 999))
  uspc = f'D{number:>2}{subclass}'
  row = {
      'title': title, 'id': f'D0{patent_num}',
      'claim': f'The ornamental design for a {noun}, as shown and described.',
      'date': date, 'class': uspc, 'class_search': repr([f'{number:02d}{int(rng.integers(1, 30)):02d}', uspc]),
      'inv_country': 'US', 'no_figs': str(len(views)), 'sheets': str(len(sheet_figs)),
      'file_names': repr(list(files)), 'fig_desc': repr(fig_desc), 'caption': caption,
  }
  return row, files


def class_counts(n_patents: int, min_per_class: int = 3) -> np.ndarray:
  """Patents per class following IMPACT's long tail (largest remainder), at least ``min_per_class``."""
  sizes = np.array([n for _, _, n in USPC_DESIGN_CLASSES], float)
  spare = n_patents - min_per_class * len(sizes)
  if spare < 0:
    raise ValueError(f'--patents must be at least {min_per_class * len(sizes)} (3 per class)')
  share = sizes / sizes.sum() * spare
  counts = np.floor(share).astype(int)
  counts[np.argsort(-(share - counts), kind='stable')[:spare - counts.sum()]] += 1
  return counts + min_per_class


def _make_and_write(args):
  index, label, seed, out = args
  row, files = make_patent(index, label, seed)
  folder = os.path.join(out, next(iter(files)).rsplit('-D', 1)[0])
  os.makedirs(folder, exist_ok=True)
  for name, data in files.items():
    with open(os.path.join(folder, name), 'wb') as f:
      f.write(data)
  return row


def generate(out: str, n_patents: int, seed: int = 0, workers: int | None = None, progress: bool = True) -> str:
  """Write the set under ``out`` (``synthetic.csv`` + one folder per patent); return the CSV path.
  Rows are written as patents are drawn (bounded memory at any size)."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  os.makedirs(out, exist_ok=True)
  labels = np.repeat(np.arange(len(CLASS_CODES)), class_counts(n_patents))
  labels = np.random.default_rng([seed, 1]).permutation(labels)
  jobs = ((i, int(label), seed, out) for i, label in enumerate(labels))
  workers = workers or min(4, os.cpu_count() or 1)
  path = os.path.join(out, 'synthetic.csv')
  with open(path + '.tmp', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=IMPACT_COLUMNS)
    writer.writeheader()
    for row in tqdm(ordered_map(_make_and_write, jobs, workers), total=len(labels), disable=not progress,
                    desc='synthetic patents', unit='patent'):
      writer.writerow(row)
  os.replace(path + '.tmp', path)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='output directory (CSV + image folders)')
  parser.add_argument('--patents', type=int, default=2000, help='number of patents (>= 99)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workers', type=int, default=None, help='processes (default: up to 4)')
  args = parser.parse_args(argv)
  path = generate(args.out, args.patents, args.seed, args.workers)
  print(f'wrote {args.patents} patents to {path}')


if __name__ == '__main__':
  main()
