"""An ordered process-pool map with a bounded window, for the data tools.

``multiprocessing.Pool.imap`` reads its whole input up front and lets finished results pile up
when the consumer is slower, so memory grows with the input; here at most ``window`` items are in
flight or waiting, and results come back in input order (the output never depends on the worker
count).
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
from typing import Any, Callable, Iterable, Iterator


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, *,
                initializer: Callable[..., None] | None = None, initargs: tuple = (),
                window: int | None = None) -> Iterator[Any]:
  """``map(fn, items)`` over ``workers`` spawned processes (inline when workers <= 1). ``fn`` and
  ``initializer`` must be importable module-level functions; ``initializer(*initargs)`` runs once
  per process (also inline), so per-process state such as an open archive is not sent per item."""
  if workers <= 1:
    if initializer:
      initializer(*initargs)
    yield from map(fn, items)
    return
  window = window or 8 * workers
  items = iter(items)
  with multiprocessing.get_context('spawn').Pool(workers, initializer, initargs) as pool:
    pending = collections.deque(pool.apply_async(fn, (item,)) for item in itertools.islice(items, window))
    while pending:
      result = pending.popleft().get()
      for item in itertools.islice(items, 1):
        pending.append(pool.apply_async(fn, (item,)))
      yield result
