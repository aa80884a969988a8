#!/usr/bin/env bash
# Set up kangnn in ./.venv on a fresh machine.
# Order matters: torch first (pinned, so pip never resolves a CUDA build on its own), then
# torch-scatter without build isolation (it compiles against the installed torch), then the rest.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_VERSION=${KANGNN_TORCH_VERSION:-2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip setuptools wheel
python -m pip install -q "torch==${TORCH_VERSION}"
python -m pip install -q -c <(echo "torch==${TORCH_VERSION}") -e ".[test,chemprop]"
if [ "${KANGNN_NO_SCATTER:-0}" != 1 ] && ! python -c "import torch_scatter" 2>/dev/null; then
  # No wheel matches this torch on the index, so it builds from source (~5 min, cached by pip).
  python -m pip install -q --no-build-isolation -c <(echo "torch==${TORCH_VERSION}") torch-scatter \
    || echo "install.sh: torch-scatter could not be built; kangnn falls back to torch's native scatter" >&2
fi
# Offline machines: seed the default data root from a local MoleculeNet mirror (read only; raw
# files are copied, never modified). Online, kangnn downloads a missing raw file on first use.
MIRROR=${KANGNN_DATA_MIRROR:-../shared/data/moleculenet}
if [ -d "$MIRROR" ]; then
  for raw in "$MIRROR"/*/raw/*; do
    [ -f "$raw" ] || continue
    name=$(basename "$(dirname "$(dirname "$raw")")")
    dest="data/$name/raw/$(basename "$raw")"
    [ -f "$dest" ] || { mkdir -p "data/$name/raw" && cp "$raw" "$dest.tmp" && mv "$dest.tmp" "$dest"; }
  done
fi
# Build the native B-spline CPU kernels now (cached per machine) rather than in the first run.
python -c "import torch, kangnn.kan.native as n; n.native_enabled(torch.zeros(1), 1)" \
  || echo "install.sh: the native B-spline kernels could not be built; kangnn uses torch.compile's" >&2
