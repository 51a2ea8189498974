# Two commands on a fresh machine:  `make demo`  and  `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: setup demo test app bench bench-prior bench-posterior bench-gpu calibrate clean

setup: $(VENV)/.installed

# torch is installed first and pinned: 2.13.0 is the CPU wheel these machines carry; an unpinned
# torch would pull gigabytes of CUDA packages.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[app,test,synthetic]'
	touch $@

demo: setup
	$(VENV)/bin/sfhkit demo --out outputs/demo

test: setup
	$(PY) -m pytest

app: setup
	$(VENV)/bin/sfhkit app

bench: setup
	$(VENV)/bin/sfhkit bench forward

bench-prior: setup
	$(VENV)/bin/sfhkit bench prior --plot outputs/prior_draws.png

bench-posterior: setup
	$(VENV)/bin/sfhkit bench posterior

# Under 5 minutes on a GPU: galaxies per hour at batch sizes 1-256, peak memory, the CPU ratio.
bench-gpu: setup
	$(VENV)/bin/sfhkit bench gpu --out outputs/bench_gpu.json

calibrate: setup
	$(VENV)/bin/sfhkit calibrate --n 200 --out outputs/calibration.json --plot outputs/calibration.png

clean:
	rm -rf $(VENV) outputs build *.egg-info
