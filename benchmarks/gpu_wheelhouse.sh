#!/usr/bin/env bash
# Gather, here, the wheels that benchmarks/gpu_check.py needs on a GPU machine without network,
# besides the machine's own torch: what the check imports (monai, pytorch-ignite, nibabel, numpy,
# tensorboard for the run's SummaryWriter, matplotlib for its curves.png) and what those import,
# no more. Binary wheels only, for CPython 3.10, 3.11 and 3.12 on manylinux x86_64 (the device's
# Python is not known in advance), at this venv's versions where they exist for that Python.
# Plus xnat-ml itself as a wheel (it needs Python >= 3.11; on 3.10 run the check from a
# checkout with PYTHONPATH=. instead).
#
#   benchmarks/gpu_wheelhouse.sh [DEST]          # DEST default: benchmarks/gpu-wheelhouse
#
# On the device:
#   python -m pip install --no-index --no-deps --find-links DEST -r DEST/requirements.txt
#   python benchmarks/gpu_check.py --out "$OUT"
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$ROOT/benchmarks/gpu-wheelhouse}
PY=${PYTHON:-$ROOT/.venv/bin/python}
# Import closure of gpu_check.py beyond torch (found by running it in a bare venv that had only
# torch and these wheels, installed with --no-deps).
PACKAGES=(monai pytorch-ignite nibabel numpy packaging tensorboard protobuf matplotlib contourpy
          cycler fonttools kiwisolver pillow pyparsing python-dateutil six)
PLATFORMS=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux_2_28_x86_64 --platform any)

mkdir -p "$DEST"
: > "$DEST/requirements.txt"
for name in "${PACKAGES[@]}"; do
    pinned=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    echo "$name" >> "$DEST/requirements.txt"
    for version in 3.10 3.11 3.12; do
        # This venv's version first; the newest one for that Python where it has none.
        for spec in "$name==$pinned" "$name"; do
            if "$PY" -m pip download --quiet --only-binary=:all: --no-deps --dest "$DEST" \
                --python-version "$version" --implementation cp "${PLATFORMS[@]}" "$spec" \
                2>/dev/null; then
                break
            fi
            [ "$spec" = "$name" ] && { echo "no wheel of $name for Python $version" >&2; exit 1; }
        done
    done
done
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" "$ROOT"
echo "xnat-ml" >> "$DEST/requirements.txt"
du -sh "$DEST"
ls "$DEST"
