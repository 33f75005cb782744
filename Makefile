# The front door: every entry point of cutout. CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This machine's pip takes the CPU wheel of torch 2.13.0 from disk; on a GPU host the
# same spec takes PyPI's CUDA build, or set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0
export CUTOUT_HOME ?= $(HOME)/.cache/cutout
STAMP := $(VENV)/.installed-stamp

.PHONY: install weights run test test-slow lint bench screenshot clean images test-deploy

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,convert,lint,heic]"
	touch $@

install: $(STAMP)

weights: install
	$(VENV)/bin/cutout weights

# The whole service on this machine: Redis, workers, Flower and the portal (cutout_cli/serve.py).
run: weights
	$(VENV)/bin/cutout serve

# Two pytest processes (pytest-xdist), each with its own Redis, workers and moto_server; a test file
# stays in one process, so its module fixtures start once. Half of a serial run's time is spent
# waiting on servers and workers, which the other process fills.
TEST_PROCESSES ?= 2
test: weights
	$(PY) -m pytest -m "not slow and not deploy" -n $(TEST_PROCESSES) --dist loadfile

# The fault-injection and load suites: minutes each, real servers killed and restarted.
test-slow: weights
	$(PY) -m pytest -m "slow and not deploy"

# The CPU image and the stand-ins for Redis and MinIO (docker/build.sh; the base from Debian
# packages where python:3.11-slim can't be pulled). A Docker daemon is started if none answers,
# and stopped afterwards if this started it.
images:
	docker/dockerd.sh run sh -c 'docker/build.sh cpu && docker/build.sh standins'

# The images run for real (tests/deploy/test_stack.py): compose up, a job from the host, a
# worker killed, compose down. Rebuilds what changed first (the layer cache keeps it short).
test-deploy: weights
	docker/dockerd.sh run sh -c 'docker/build.sh cpu && docker/build.sh standins && $(PY) -m pytest -m deploy tests/deploy'

# The README's picture of a finished job (docs/job-page.png), retaken on purpose by the browser test
# against the real stack; an ordinary test run saves it into a temporary folder.
screenshot: weights
	CUTOUT_UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/web/test_browser.py -k test_a_batch_uploaded_in_the_portal_ends_in_a_gallery_and_a_zip

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy matting_core tasks

bench: weights
	$(PY) -m bench.cpu_stages
	$(PY) -m bench.zip_speed
	$(PY) -m bench.batch_speed
	$(PY) -m bench.cluster_speed
	$(PY) -m bench.worker_memory
	$(PY) -m bench.vs_rembg
	$(PY) -m bench.matting_quality

clean:
	rm -rf $(VENV) out build *.egg-info
