# One place that installs everything the project needs (README quick start uses these targets).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install run test clean

$(STAMP): setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch pinned first: on these machines 2.13.0 installs from a local CPU wheel (setup.cfg accepts torch>=2.1,<3).
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[encoders,test]'
	# RecBole 1.2.1 declares ray<=2.6.3 (unusable with numpy 2); its real needs are in setup.cfg.
	$(PIP) install --no-deps recbole==1.2.1
	touch $(STAMP)

install: $(STAMP)

## Train and evaluate the default model on the embedded default dataset (ml-100k + text/genre features).
## Without ARGS the demo runs 10 epochs (SSR's own schedule is 50); ARGS replaces that, e.g. ARGS="--epochs=50".
run: install
	$(PY) run_recbole_ssr.py $(if $(ARGS),$(ARGS),--epochs=10)

## Run the test suite.
test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) log log_tensorboard saved
