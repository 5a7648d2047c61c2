"""Pictures for the eval CLI's --plots: the long-tail picture and a retrieval grid."""

from __future__ import annotations

import os

import numpy as np

from designclip_jax.data import images as image_ops


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def long_tail(per_class: dict[str, np.ndarray], class_counts, class_codes, path: str) -> str:
  """Per-class zero-shot accuracy against train frequency, one series per model."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  counts = np.asarray(class_counts, float)
  for name, acc in per_class.items():
    ok = ~np.isnan(acc) & (counts > 0)
    ax.scatter(counts[ok], acc[ok], label=name, alpha=0.8)
  for i, code in enumerate(class_codes):
    if counts[i] > 0:
      ax.annotate(code, (counts[i], 0), fontsize=6, rotation=90, alpha=0.5)
  ax.set_xscale('log')
  ax.set_xlabel('training examples of the class (log)')
  ax.set_ylabel('zero-shot accuracy')
  ax.set_ylim(-0.05, 1.05)
  ax.legend()
  ax.set_title('Accuracy by class frequency (long tail on the left)')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def retrieval_grid(retrieval: dict, path: str, *, queries: int = 6, top_k: int = 6) -> str:
  """A few queries with their top-k gallery drawings (``query_images`` / ``gallery_images``: PNG bytes by
  row); relevant ones framed green, others red."""
  plt = _pyplot()
  q = retrieval['query'] / np.linalg.norm(retrieval['query'], axis=1, keepdims=True)
  g = retrieval['gallery'] / np.linalg.norm(retrieval['gallery'], axis=1, keepdims=True)
  chosen = np.linspace(0, len(q) - 1, min(queries, len(q))).astype(int)
  fig, axes = plt.subplots(len(chosen), top_k + 1, figsize=(1.6 * (top_k + 1), 1.7 * len(chosen)), squeeze=False)
  for row, qi in enumerate(chosen):
    axes[row, 0].imshow(image_ops.decode_png(retrieval['query_images'][qi]), cmap='gray')
    axes[row, 0].set_title('query', fontsize=7)
    order = np.argsort(-(g @ q[qi]), kind='stable')[:top_k]  # ties by gallery order, as the metrics rank
    for col, gi in enumerate(order, start=1):
      ax = axes[row, col]
      ax.imshow(image_ops.decode_png(retrieval['gallery_images'][gi]), cmap='gray')
      relevant = retrieval['gallery_ids'][gi] == retrieval['query_ids'][qi]
      for spine in ax.spines.values():
        spine.set_edgecolor('green' if relevant else 'red')
        spine.set_linewidth(3)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle('Image retrieval: top matches (green = same patent)', fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
