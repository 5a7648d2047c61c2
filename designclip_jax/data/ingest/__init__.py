"""Ingestion: IMPACT CSVs and their drawings, or USPTO Red Book design grants -> a TFDS ArrayRecord data
set (CLI: ``python -m designclip_jax.data.ingest``; see its ``__main__`` for the layout and the rules)."""

from designclip_jax.data.ingest.report import print_summary
from designclip_jax.data.ingest.errors import IngestError
from designclip_jax.data.ingest.stream import ingest, ingest_redbook
from designclip_jax.data.ingest.writer import WORK_DIR, is_finished, prepare_output

__all__ = ['IngestError', 'WORK_DIR', 'ingest', 'ingest_redbook', 'is_finished', 'prepare_output', 'print_summary']
