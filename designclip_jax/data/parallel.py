"""An ordered process-pool map with a bounded window, for the data tools.

At most ``window`` items are in flight or waiting, so memory does not grow with the input (a pool's
``imap`` reads its whole input up front and lets finished results pile up), and results come back in
input order (the output never depends on the worker count). It runs on
``concurrent.futures.ProcessPoolExecutor``, which notices a worker that dies (the kernel's OOM killer,
a decoder that crashes the interpreter) and fails the pending work with ``BrokenProcessPool``:
``multiprocessing.Pool`` replaces such a worker and leaves the lost task's ``get()`` waiting forever.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator


class WorkerDied(RuntimeError):
  """A worker process ended without returning a result; ``item`` is the first item left unfinished."""

  def __init__(self, item: Any):
    super().__init__('a worker process died (killed by the system, or crashed) before finishing its work')
    self.item = item


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
  """In each worker: end with the parent. A parent killed outright (SIGKILL, preemption) leaves its
  workers blocked on the task queue, whose write end they hold too; multiprocessing gives a spawned
  child its parent's sentinel, which becomes ready when the parent is gone."""
  parent = multiprocessing.parent_process()
  threading.Thread(target=lambda: (multiprocessing.connection.wait([parent.sentinel]), os._exit(1)),
                   daemon=True).start()
  if initializer:
    initializer(*initargs)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, *,
                initializer: Callable[..., None] | None = None, initargs: tuple = (),
                window: int | None = None) -> Iterator[Any]:
  """``map(fn, items)`` over ``workers`` spawned processes (inline when workers <= 1). ``fn`` and
  ``initializer`` must be importable module-level functions; ``initializer(*initargs)`` runs once
  per process (also inline), so per-process state such as an open archive is not sent per item.
  Raises ``WorkerDied`` if a worker process dies; an exception raised by ``fn`` passes through."""
  if workers <= 1:
    if initializer:
      initializer(*initargs)
    yield from map(fn, items)
    return
  window = window or 8 * workers
  items = iter(items)
  pending = collections.deque()  # (item, future), in input order
  pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'),
                                                initializer=_start_worker, initargs=(initializer, initargs))

  def submit(count: int) -> None:
    for item in itertools.islice(items, count):
      pending.append((item, None))  # unfinished even if the pool is found broken while submitting it
      pending[-1] = (item, pool.submit(fn, item))

  try:
    submit(window)
    while pending:
      result = pending[0][1].result()
      pending.popleft()
      submit(1)
      yield result
  except BrokenProcessPool:
    raise WorkerDied(pending[0][0]) from None
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
