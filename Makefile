# Set-up and the two jobs of README.md. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# torch is pinned in the install step (a CPU wheel on our machines); pyproject keeps a range.
TORCH  ?= torch==2.13.0

.PHONY: install browser book test test-fast results results-v1 results-msr nbgrader clean gpu-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[book,dev]"
	touch $@

install: $(VENV)/.installed

# Build the book on the synthetic default data (book profile), warnings are errors.
book: install
	I2MD_PROFILE=book $(VENV)/bin/jupyter-book build . -W -n --keep-going

# Headless Chromium (Debian package) for tests/test_reader.py, which opens the built book
# offline as a reader would; installed with apt-get when /usr/bin/chromium is missing.
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium for the reader test (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core; \
	fi

# Unit tests + every chapter notebook at smoke scale (pytest --nbval-lax), two workers;
# tests/test_reader.py also builds the book at smoke scale and opens it in Chromium.
test: install browser
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 I2MD_PROFILE=smoke \
	  $(PY) -m pytest -n 2 --dist loadfile tests book --nbval-lax --nbval-current-env

# The precomputed book-profile tables (results/book/...): many hours on 2 CPU cores. The book
# profile is testbed v3 (data/README.md). First the hyperparameter search on the validation
# benchmark, then the noise budget, then the main suite and the ablations, each with the seeds
# the noise budget asks for (i2md_lib.experiments.TARGET_SEEDS; the book shows the committed
# ones, SUITE_SEEDS). Runs with a current result file are skipped, so an interrupted
# `make results` continues where it stopped. JOBS=1 leaves a core free.
JOBS ?= 1
results: install
	OMP_NUM_THREADS=1 $(PY) -m i2md_lib experiments --suite search --profile book --target --jobs $(JOBS)
	OMP_NUM_THREADS=1 $(PY) tools/noise_budget.py --profile book --semi-draws 10 \
	  --methods random_init moco3 cmd --seeds 0 1 2 --eval-seeds 0 1 2 3 --pair cmd moco3 --jobs $(JOBS)
	OMP_NUM_THREADS=1 $(PY) -m i2md_lib experiments --suite main --profile book --target --jobs $(JOBS)
	OMP_NUM_THREADS=1 $(PY) -m i2md_lib experiments --suite ablation --profile book --target --jobs $(JOBS)

# Real recordings (Chapter 7): MSR Action3D from its skeleton files (MSR_RAW=/path/to/skeletons; the
# files stay outside the repository, data/msr is git-ignored), then the optimisation and training-length
# study on the validation benchmarks of both testbeds and the search of MSR's sizes
# (tools/msr_study.py; i2md_lib.studies.SETTINGS), then the ladder on MSR's cross-subject test, at
# the book's length and at four times the length (long4x: about an hour per seed of all six methods).
MSR_RAW ?=
STUDY_SEEDS ?= 0 1 2
LADDER_SEEDS ?= 0 1 2 3 4 5 6 7 8 9
results-msr: install
	@test -n "$(MSR_RAW)" || { echo "set MSR_RAW=/path/to/MSR Action3D skeleton files"; exit 2; }
	$(PY) -m i2md_lib prepare-msr $(MSR_RAW) data/msr
	OMP_NUM_THREADS=1 $(PY) tools/msr_study.py --data-card
	OMP_NUM_THREADS=1 $(PY) tools/msr_study.py --part val --variants random_init --seeds $(STUDY_SEEDS)
	for setting in book reference lr0.01 m0.999 long4x; do \
	  OMP_NUM_THREADS=1 $(PY) tools/msr_study.py --part val --setting $$setting --seeds $(STUDY_SEEDS) \
	    --variants moco3 cmd i2md --jobs $(JOBS) || exit 1; \
	  OMP_NUM_THREADS=1 $(PY) tools/msr_study.py --testbed synthetic --part val --setting $$setting \
	    --seeds $(STUDY_SEEDS) --variants moco3 cmd i2md --jobs $(JOBS) || exit 1; \
	done
	for setting in queue64 queue224 topk32 dna4 dna16; do \
	  OMP_NUM_THREADS=1 $(PY) tools/msr_study.py --part val --setting $$setting --seeds $(STUDY_SEEDS) \
	    --variants i2md --jobs $(JOBS) || exit 1; \
	done
	OMP_NUM_THREADS=1 $(PY) tools/msr_study.py --part test --setting book --seeds $(LADDER_SEEDS) \
	  --variants random_init moco_joint moco3 cmd cmd_dna i2md --jobs $(JOBS)
	OMP_NUM_THREADS=1 $(PY) tools/msr_study.py --part test --setting long4x --seeds $(LADDER_SEEDS) \
	  --variants random_init moco_joint moco3 cmd cmd_dna i2md --jobs $(JOBS)

# The book before testbed v3 (results/book/testbed_v1/: version 1 without distortions, 40 epochs),
# file by file under the design that restores it.
results-v1: install
	OMP_NUM_THREADS=1 $(PY) tools/testbed.py --design v1 --suite search --seeds 0 1 --jobs $(JOBS)
	OMP_NUM_THREADS=1 $(PY) tools/testbed.py --design v1 --parts test --variants all --jobs $(JOBS) \
	  --seeds 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
	OMP_NUM_THREADS=1 $(PY) tools/testbed.py --design v1 --parts test --suite ablation --seeds 0 1 2 --jobs $(JOBS)

# Everything device-dependent in one command (tools/gpu_check.py, at most ~8 minutes on one GPU):
# tests on cuda, bench_step.py at book and paper size, a short pretraining of every method, a
# 1-GPU torchrun with NCCL -> benchmarks/results/gpu.md/.json. Without CUDA: smoke scale on the
# CPU (gloo), written to a temporary folder.
gpu-check: install
	$(PY) tools/gpu_check.py

test-fast: install
	I2MD_PROFILE=smoke $(PY) -m pytest -x -q -m "not reader" tests

# The nbgrader round trip over classroom/: generate_assignment, then autograde a solved, an
# empty, a partly solved and a delegating submission of every assignment, and check the points
# in nbgrader's gradebook (tools/nbgrader_roundtrip.py). nbgrader brings JupyterLab and more, so
# it gets a virtualenv of its own, with this repository (and its pinned CPU torch) installed.
NBGRADER_VENV ?= .venv-nbgrader
NBGRADER      ?= nbgrader==0.9.6
# NBGRADER_ARGS=--record rewrites the recorded run, classroom/nbgrader_run.json
NBGRADER_ARGS ?=

$(NBGRADER_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(NBGRADER_VENV)
	$(NBGRADER_VENV)/bin/python -m pip install --quiet "$(TORCH)" "$(NBGRADER)" -e .
	touch $@

nbgrader: $(NBGRADER_VENV)/.installed
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
	  $(NBGRADER_VENV)/bin/python tools/nbgrader_roundtrip.py $(NBGRADER_ARGS)

clean:
	rm -rf _build .pytest_cache
