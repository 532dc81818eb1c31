#!/bin/sh
# Installs xnat-ml into a virtual environment inside an image build; shared by both Dockerfiles.
#   install.sh torch  VENV          torch (TORCH, from TORCH_INDEX) unless the base image has one
#   install.sh xnat-ml VENV SOURCE  xnat-ml and its dependencies from the source tree
# With wheels in WHEELS (see wheels/README.md) pip installs from them only, never the network:
# that is how the image is built where no package index can be reached (this project's CI).
set -eu
step=$1 venv=$2

if [ ! -x "$venv/bin/python" ]; then
    # --system-site-packages keeps a torch the base image brings (the CUDA images).
    python3 -m venv --system-site-packages "$venv"
fi
pip() { "$venv/bin/python" -m pip --no-cache-dir --disable-pip-version-check "$@"; }
if ls "${WHEELS:?}"/*.whl >/dev/null 2>&1; then
    offline="--no-index --find-links $WHEELS"
else
    offline=""
fi

case "$step" in
torch)
    if "$venv/bin/python" -c "import torch" 2>/dev/null; then
        "$venv/bin/python" -c "import torch; print('torch', torch.__version__, 'from the base image')"
    elif [ -n "$offline" ]; then
        pip install $offline "${TORCH:?}"
    else
        pip install --index-url "${TORCH_INDEX:?}" "${TORCH:?}"
    fi
    ;;
xnat-ml)
    pip install $offline "${3:?source folder}"
    "$venv/bin/xnat-ml" --help >/dev/null
    ;;
*)
    echo "install.sh: unknown step '$step' (torch or xnat-ml)" >&2
    exit 2
    ;;
esac
