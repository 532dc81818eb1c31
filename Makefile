# Two commands do all set-up: `make demo` and `make test`. Both create .venv/ idempotently.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
WHEELS := container_images/xnat-ml/wheels
IMAGE ?= xnat-ml/xnat-ml:0.1.0

.PHONY: venv demo test lint bench wheelhouse image clean migration monailabel-client

venv: $(STAMP)

# torch first, from the CPU wheel: a bare `torch` pulled in by a dependency is a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m xnat_ml.demo

# After changing a model: write the next schema revision from the difference (docs/server.md).
migration: $(STAMP)
	test -n "$(MSG)" || { echo 'usage: make migration MSG="what changes"'; exit 2; }
	$(PY) -m xnat_ml.server.store.schema revision -m "$(MSG)"

# The image test builds container_images/xnat-ml offline, from these wheels (fetched now, while
# package indexes are reachable; pip's cache makes a second run quick).
wheelhouse: $(WHEELS)/.built

$(WHEELS)/.built: setup.cfg pyproject.toml $(STAMP)
	$(PY) -m pip wheel --quiet --wheel-dir $(WHEELS) $(TORCH) setuptools wheel .
	rm -f $(WHEELS)/xnat_ml-*.whl
	touch $@

# `make wheelhouse image` builds it without a package index (wheels for this machine's Python).
image: $(STAMP)
	docker build -f container_images/xnat-ml/Dockerfile -t $(IMAGE) $(DOCKER_BUILD_ARGS) \
	    --build-arg XNAT_COMMANDS="$$($(VENV)/bin/xnat-ml commands label command_json/*.json)" .

# MONAI Label's own client for the monailabel tests, unmodified, beside (not in) .venv: its full
# dependencies cannot install with this project's numpy and CPU torch, and the client needs none.
MONAILABEL_VENV := .venv-monailabel
monailabel-client: $(MONAILABEL_VENV)/.installed

$(MONAILABEL_VENV)/.installed:
	test -x $(MONAILABEL_VENV)/bin/python || $(PYTHON) -m venv $(MONAILABEL_VENV)
	$(MONAILABEL_VENV)/bin/pip install --quiet --no-deps monailabel==0.8.5
	$(MONAILABEL_VENV)/bin/pip install --quiet requests
	touch $@

# First the demo loop's tests alone: its one training run wants both cores (beside other tests,
# torch's threads got under one core and training took over twice as long). Then the rest on two
# pytest-xdist workers: the suite waits on servers, jobs and daemons more than it computes.
# tests/conftest.py keeps a module on one worker and runs dockerd and Slurm once each
# (TEST_WORKERS=0: one process). setup.cfg keeps pytest below 9.2: xdist 3.8 names a test's
# group in Item._nodeid, which pytest 9.2 no longer reads (every group would be split).
# Exit 5 is "no test selected" (PYTEST_ARGS naming tests of one phase only).
TEST_WORKERS ?= 2
test: $(STAMP) $(WHEELS)/.built $(MONAILABEL_VENV)/.installed
	$(PY) -m pytest -m demo_loop $(PYTEST_ARGS); first=$$?; \
	$(PY) -m pytest -m "not demo_loop" -n $(TEST_WORKERS) --dist loadgroup \
	    --no-loadscope-reorder $(PYTEST_ARGS); rest=$$?; \
	for rc in $$first $$rest; do [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc; done; \
	[ $$first -eq 0 ] || [ $$rest -eq 0 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check xnat_ml tests benchmarks

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(MONAILABEL_VENV) build *.egg-info $(WHEELS)/*.whl $(WHEELS)/.built
