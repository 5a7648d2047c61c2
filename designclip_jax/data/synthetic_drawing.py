"""Procedural 3D objects of the synthetic design patents and their USPTO-style drawing sheets.

A class template fixes which primitive parts an object has and their typical proportions; every
patent draws its own sizes, offsets and optional parts, so two patents of a class differ visibly
while all views of one patent show the same object. Objects are drawn as black-on-white
orthographic line drawings (front, rear, left, right, top, bottom, perspective) with one part
sometimes dashed (unclaimed), saved as 1-bit group-4 TIFF sheets like the USPTO's.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
from PIL import Image, ImageDraw

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



def pick_dashed(parts: list[Part], rng: np.random.Generator) -> int:
  """The part drawn dashed (unclaimed): a non-body part in about 30% of patents, else -1."""
  return int(rng.integers(1, len(parts))) if len(parts) > 1 and rng.random() < 0.3 else -1


@dataclasses.dataclass(frozen=True)
class Sheets:
  """A patent's drawings: ``files`` (name -> TIFF bytes, the front-page drawing ``-D00000`` first),
  one view description per figure, and which figures each drawing sheet holds (0-based)."""
  files: dict[str, bytes]
  fig_desc: list[str]
  sheet_figures: list[list[int]]


def draw_sheets(parts: list[Part], dashed: int, noun: str, stem: str, rng: np.random.Generator) -> Sheets:
  """Choose 3-7 views (perspective first), describe them as USPTO figure captions do and draw the
  sheets named ``<stem>-D000NN.TIF``."""
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
  return Sheets(files, fig_desc, sheet_figs)
