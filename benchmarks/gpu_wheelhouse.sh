#!/usr/bin/env bash
# Gather, here, the wheels that benchmarks/gpu_check.py needs on a GPU machine without network,
# besides the machine's own torch: what the check imports (monai, pytorch-ignite, nibabel, numpy,
# tensorboard for the run's SummaryWriter, matplotlib for its curves.png, pydicom that
# xnat_ml.imaging imports) and what those import, no more. Binary wheels only, for CPython 3.10,
# 3.11 and 3.12 on manylinux x86_64 (the device's Python is not known in advance), one folder
# each (DEST/cp311, ...: about 50 MB, under the 64 MiB a device run carries), at this venv's
# versions where they exist for that Python. Plus xnat-ml itself as a wheel (it needs
# Python >= 3.11; on 3.10 run the check from a checkout with PYTHONPATH=. instead).
#
#   benchmarks/gpu_wheelhouse.sh [DEST]          # DEST default: benchmarks/gpu-wheelhouse
#
# On the device (carry DEST/cpXYZ for its Python):
#   python -m pip install --no-index --no-deps --find-links W -r W/requirements.txt
#   python benchmarks/gpu_check.py --out "$OUT"
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-$ROOT/benchmarks/gpu-wheelhouse}
PY=${PYTHON:-$ROOT/.venv/bin/python}
# Import closure of gpu_check.py beyond torch (found by running it in a bare venv that had only
# torch and these wheels, installed with --no-deps).
PACKAGES=(monai pytorch-ignite nibabel importlib-resources numpy packaging pydicom tensorboard
          protobuf absl-py matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing
          python-dateutil tzdata)
PLATFORMS=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux_2_28_x86_64 --platform any)

mkdir -p "$DEST"
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$DEST" "$ROOT"
for version in 3.10 3.11 3.12; do
    folder=$DEST/cp${version/./}
    mkdir -p "$folder"
    printf '%s\n' "${PACKAGES[@]}" > "$folder/requirements.txt"
    for name in "${PACKAGES[@]}"; do
        pinned=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
        # This venv's version first; the newest one for that Python where it has none.
        for spec in ${pinned:+"$name==$pinned"} "$name"; do
            if "$PY" -m pip download --quiet --only-binary=:all: --no-deps --dest "$folder" \
                --python-version "$version" --implementation cp "${PLATFORMS[@]}" "$spec" \
                2>/dev/null; then
                break
            fi
            [ "$spec" = "$name" ] && { echo "no wheel of $name for Python $version" >&2; exit 1; }
        done
    done
    if [ "$version" != 3.10 ]; then
        cp "$DEST"/xnat_ml-*.whl "$folder/" && echo xnat-ml >> "$folder/requirements.txt"
    fi
done
rm -f "$DEST"/xnat_ml-*.whl
du -sh "$DEST"/cp3*
