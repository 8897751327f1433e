# Two entry points for a fresh machine: `make train` (demo run) and `make test`.
# Both build .venv from the pinned lock file when it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-slurm test-docs lint bench lock clean-venv docs docs-serve

$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

train: $(STAMP)  ## run the demo training and write its review page (extra Hydra overrides: make train ARGS="seed=43")
	$(PY) -m mammo.train review=true $(ARGS)

test: $(STAMP)  ## the whole test suite (what CI runs)
	MPLBACKEND=Agg HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(ARGS)

test-slurm: $(STAMP)  ## the tests marked slurm, on a one-node SLURM cluster started (and stopped) here
	scripts/local_slurm.sh install
	MPLBACKEND=Agg HF_HUB_OFFLINE=1 scripts/local_slurm.sh run $(PY) -m pytest -q -m slurm tests $(ARGS)

docs: $(STAMP)  ## build the docs site into site/ (opens from its folder; nothing fetched from outside)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)  ## serve the docs on http://127.0.0.1:8000, rebuilt on each change
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

test-docs: $(STAMP)  ## the docs site's tests: it builds --strict, its runnable commands run, it works in Chromium
	MPLBACKEND=Agg HF_HUB_OFFLINE=1 NO_MKDOCS_2_WARNING=1 MAMMO_DOCS=1 $(PY) -m pytest -q -m docs tests $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check mammo tests scripts hydra_plugins

bench: $(STAMP)
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_app.py
	$(PY) scripts/bench_data.py
	$(PY) scripts/bench_cache.py
	$(PY) scripts/bench_embed.py
	$(PY) scripts/bench_setup.py
	$(PY) scripts/bench_eval.py
	$(PY) scripts/bench_review.py

lock:  ## re-pin requirements/lock.txt from requirements/top.txt in a scratch venv
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q -r requirements/top.txt
	(echo "# Pinned install for CI and 'make'; regenerate with 'make lock'."; .venv-lock/bin/pip freeze) > requirements/lock.txt
	rm -rf .venv-lock

clean-venv:
	rm -rf $(VENV)
