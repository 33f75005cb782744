# The front door: every entry point of cutout. CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This machine's pip takes the CPU wheel of torch 2.13.0 from disk; on a GPU host the
# same spec takes PyPI's CUDA build, or set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0
export CUTOUT_HOME ?= $(HOME)/.cache/cutout
STAMP := $(VENV)/.installed-stamp

.PHONY: install weights run test test-slow lint bench screenshot clean

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

test: weights
	$(PY) -m pytest -m "not slow"

# The fault-injection and load suites: minutes each, real servers killed and restarted.
test-slow: weights
	$(PY) -m pytest -m slow

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
