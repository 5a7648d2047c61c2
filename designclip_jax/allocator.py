"""Which malloc serves this process: the library that defines the ``malloc`` the dynamic linker resolved,
looked up in /proc/self/maps (a library preloaded with LD_PRELOAD comes before libc; scripts/allocator.sh
preloads one)."""

from __future__ import annotations

import ctypes
import os

# file-name fragment -> allocator
_KNOWN = (('mimalloc', 'mimalloc'), ('tcmalloc', 'tcmalloc'), ('jemalloc', 'jemalloc'), ('libc.so', 'glibc'),
          ('libc-', 'glibc'))


def malloc_library() -> str | None:
  """Path of the shared library whose ``malloc`` this process calls (None if not found: no /proc, or a
  statically linked malloc)."""
  address = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
  try:
    with open('/proc/self/maps') as maps:
      for line in maps:
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split('-'))
        if start <= address < end:
          return fields[5].strip() if len(fields) == 6 else None
  except OSError:
    return None
  return None


def describe() -> str:
  """'mimalloc (/path/libmimalloc.so.3)', 'glibc (/lib/.../libc.so.6)', or what is known."""
  path = malloc_library()
  if path is None:
    return 'unknown (no /proc/self/maps entry for malloc)'
  base = os.path.basename(path)
  name = next((name for fragment, name in _KNOWN if fragment in base), base)
  return f'{name} ({path})'
