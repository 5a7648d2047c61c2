#!/usr/bin/env bash
# Cloud TPU pod slice: build this checkout into one wheel, copy it with the config file to every worker, and
# start the same training command on all of them (JAX discovers the pod topology).
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#   DRY_RUN=1 launch/tpu_pod.sh ...   prints the commands instead of running them
# No checkout is needed on a worker and every worker runs the same code: launch/tpu_worker.sh installs the wheel
# into ~/designclip_jax_venv there (created on first use, with jax[tpu] and the gs:// clients) and starts
# training under a fast allocator (scripts/allocator.sh). Needs git and pip here, gcloud configured for the slice.
# WORKDIR: a gs:// bucket path (Orbax writes it from all hosts; metrics, TensorBoard and model.json go there
# too). The data set (--config.data.dir) and an initial model (--config.model.init, a Hugging Face directory)
# are read from gs:// paths as they are; a local path has to exist on every worker.
# Preemption or maintenance: a SIGTERM on any worker makes every worker save the same step and exit with
# status 75 (designclip_jax.train.loop.PREEMPTED_EXIT_CODE); run this script again, on the same or a
# recreated slice, and training resumes from that checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then sed -n '2,5s/^# \{0,1\}//p' "$0" >&2; exit 2; fi
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
launch_dir=designclip_launch  # on each worker, in its home directory

run() {  # the command, or with DRY_RUN=1 its shell-quoted text
  if [ "${DRY_RUN:-}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi
}

export_checkout() {  # the files git sees (tracked and new, not ignored): no stale build/ enters the wheel
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done |
    tar --null -T - -cf - | tar -C "$1" -xf -
  # the commit, for provenance: an installed wheel has no git checkout to ask
  git describe --always --dirty --abbrev=12 > "$1/designclip_jax/BUILD_COMMIT"
}

config_file=${config%%:*}  # config_flags takes FILE or FILE:ARGUMENT
[ -f "$config_file" ] || { echo "config file not found: $config_file" >&2; exit 2; }
for arg in "$@"; do
  case $arg in
    --config.model.init=gs://* | --config.data.dir=gs://*) ;;
    --config.model.init=?* | --config.data.dir=?*)
      echo "note: ${arg%%=*} is a local path: it has to exist on every worker (a gs:// path needs no copy)" >&2 ;;
  esac
done
case $workdir in
  gs://*) ;;
  *) echo "note: WORKDIR $workdir is local to each worker; use a gs:// path for one shared run" >&2 ;;
esac

version=$(sed -n "s/^__version__ = '\(.*\)'$/\1/p" designclip_jax/__init__.py)
wheel=designclip_jax-$version-py3-none-any.whl
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src" "$stage/$launch_dir"/{dist,launch,scripts,configs}
run export_checkout "$stage/src"
run "${PYTHON:-python3}" -m pip wheel --quiet --no-deps --wheel-dir "$stage/$launch_dir/dist" "$stage/src"
[ "${DRY_RUN:-}" = 1 ] || [ -f "$stage/$launch_dir/dist/$wheel" ] || { echo "the build made no $wheel" >&2; exit 1; }
cp launch/tpu_worker.sh "$stage/$launch_dir/launch/"
cp scripts/allocator.sh "$stage/$launch_dir/scripts/"
cp "$config_file" "$stage/$launch_dir/configs/"
run gcloud compute tpus tpu-vm scp --recurse "$stage/$launch_dir" "$tpu:" --zone "$zone" --worker=all
run gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "bash $launch_dir/launch/tpu_worker.sh $(printf '%q ' "$wheel" "configs/$(basename "$config")" "$workdir" "$@")"
