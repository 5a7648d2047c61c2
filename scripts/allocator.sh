# shellcheck shell=bash
# Sourced by scripts/*.sh and launch/*.sh: start Python under a fast malloc where one can be had without
# root. glibc's malloc hands large buffers back to the kernel and faults them in again on every step (30% of
# the demo's CPU time was in the kernel); bench/allocators.py measures the candidates, bench/RESULTS.md
# ("Allocators") has the table that set the order below: the OS's tcmalloc where installed (the fewest page
# faults: ~0 per train step against 100k-340k under glibc), else mimalloc from the cmeel-mimalloc wheel (no root
# needed; 35-50x fewer). jemalloc faulted as often as glibc, so it is used only when asked for by name.
#
#   use_fast_allocator VENV   exports LD_PRELOAD=<the first found of ALLOCATOR_PREFERENCE>, prepended to any
#                             LD_PRELOAD already set; leaves the environment as it is when none is found, when
#                             LD_PRELOAD already names a malloc, off Linux, or with DESIGNCLIP_ALLOCATOR=glibc;
#                             DESIGNCLIP_ALLOCATOR=NAME (mimalloc, tcmalloc, jemalloc) asks for that one only
#   allocator_library NAME VENV   prints the library file of one allocator (exit 1 if not installed)
#
# Children inherit LD_PRELOAD through the environment: Grain's and the ingest's worker processes run
# under the same allocator (tests/test_allocator.py reads their /proc/PID/maps). So does any other program
# Python starts: Chromium stops on a trap under mimalloc (the browser test starts it without LD_PRELOAD).

ALLOCATOR_PREFERENCE=(tcmalloc mimalloc)

allocator_library() {
  local name=$1 venv lib
  venv=$(cd "$2" 2>/dev/null && pwd) || venv=$2  # absolute: children may run in another directory
  local os_lib_dirs=("/usr/lib/$(uname -m)-linux-gnu" /usr/lib64 /usr/lib)
  local candidates=()
  case $name in
    # PyPI's cmeel-mimalloc (a default dependency on Linux), in the environment's site-packages
    mimalloc) candidates=("$venv"/lib/python3*/site-packages/cmeel.prefix/lib/libmimalloc.so.3) ;;
    # the OS's packages (Debian: libtcmalloc-minimal4, libjemalloc2)
    tcmalloc) for lib in "${os_lib_dirs[@]}"; do candidates+=("$lib/libtcmalloc_minimal.so.4"); done ;;
    jemalloc) for lib in "${os_lib_dirs[@]}"; do candidates+=("$lib/libjemalloc.so.2"); done ;;
    *) echo "unknown allocator '$name' (known: tcmalloc mimalloc jemalloc)" >&2; return 2 ;;
  esac
  for lib in "${candidates[@]}"; do
    if [ -f "$lib" ] && [ -r "$lib" ]; then
      echo "$lib"
      return 0
    fi
  done
  return 1
}

use_fast_allocator() {
  local venv=$1 name lib order=("${ALLOCATOR_PREFERENCE[@]}")
  [ "$(uname -s)" = Linux ] || return 0
  case ${LD_PRELOAD:-} in *malloc*) return 0 ;; esac  # the user chose one
  case ${DESIGNCLIP_ALLOCATOR:-auto} in
    auto) ;;
    glibc) return 0 ;;
    *) order=("$DESIGNCLIP_ALLOCATOR") ;;
  esac
  for name in "${order[@]}"; do
    if lib=$(allocator_library "$name" "$venv"); then
      export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
      return 0
    fi
  done
  [ "${DESIGNCLIP_ALLOCATOR:-auto}" = auto ] || echo "DESIGNCLIP_ALLOCATOR=$DESIGNCLIP_ALLOCATOR: not installed; glibc's malloc" >&2
  return 0
}
