#!/usr/bin/env bash
# The one prepared device check: the accelerator benchmark on a lent machine.
#
# The device image has jax, flax, optax, orbax, chex, absl, etils and scipy
# but not ml_collections, clu or wrapt, and reaches no registry, so their wheels
# travel with the tree (run's carry: [".whl"]), fetched here beforehand with
#   pip download --no-deps ml_collections==1.1.0 clu==0.0.12 -d .whl
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 wrapt -d .whl   # clu needs it
# and install into a scratch directory, without dependencies.
#
#   OUT=/tmp/out bash benchmarks/device_check.sh            # the full preset
#   OUT=/tmp/out bash benchmarks/device_check.sh --quick    # a rehearsal
#
# Writes $OUT/<platform>.json and .md (benchmarks/accelerator.py) and
# $OUT/environment.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the directory the results go to}"
PYTHON="${PYTHON:-python3}"
site="$(mktemp -d)"
"$PYTHON" -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD"
mkdir -p "$OUT"
{
  "$PYTHON" --version
  "$PYTHON" -c 'import jax; print("jax", jax.__version__, jax.devices())'
  nproc
} >"$OUT/environment.txt" 2>&1
timeout 480 "$PYTHON" -m benchmarks.accelerator --output_dir="$OUT" "$@"
