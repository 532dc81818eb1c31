# A stand-in for a CUDA base image such as pytorch/pytorch: a python3 whose own site-packages
# already hold torch. Built by tests/containers/e2e.py with the wheelhouse as its context, offline.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY . /tmp/wheels/
RUN python3 -m venv /tmp/pip \
 && /tmp/pip/bin/pip install --quiet --no-cache-dir --no-index --find-links /tmp/wheels \
        --target "$(python3 -c 'import site; print(site.getsitepackages()[0])')" torch \
 && rm -rf /tmp/pip /tmp/wheels
