"""The one error type of ingestion, and the message for a worker that died."""


class IngestError(Exception):
  """Bad input or a failed write: a one-line message that names the file. A re-run resumes."""


def worker_died(block: int, where: str) -> IngestError:
  """One line for a worker process that died: the block to resume from, and the likely causes."""
  return IngestError(f'block {block}: a worker process died ({where} or a row beside it, unfinished): killed by '
                     'the system (out of memory?) or crashed in a decoder; the finished blocks are kept: run the '
                     'same command again to resume (fewer --workers if memory ran out)')
