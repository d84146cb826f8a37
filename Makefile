# Self-documenting: `make help`. Every target installs into .venv first (idempotent).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# CPU build by default (it lies on the CI machine's disk); GPU users: see README / environment.yml.
TORCH_SPEC ?= torch==2.13.0
JOBS   ?= 2
FPS    ?= 12
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run run-autoencoder test test-fast lint video notebooks evaluate report bench clean-outputs

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  variables: RUN=<run dir> COMPARE='<run> ...' JOBS=$(JOBS) FPS=$(FPS) ALL=1 TORCH_SPEC='$(TORCH_SPEC)'"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install the project (CPU torch unless TORCH_SPEC says otherwise)

run: install ## Train the GAN on built-in data on CPU (+exp=small, ~3 min once data is cached)
	$(PY) experiments/train_gan.py +exp=small

run-autoencoder: install ## Train the climate autoencoder on built-in data (+exp=small)
	$(PY) experiments/train_autoencoder.py +exp=small

test: install ## Run the test suite (slow tests included; what .ci/run calls)
	$(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

test-fast: install ## Run the suite without tests marked slow
	$(PY) -m pytest -n 2 -q -m "not slow" $(PYTEST_ARGS)

lint: install ## ruff format --check and ruff check
	$(VENV)/bin/ruff format --check diagnostics experiments tests benchmarks
	$(VENV)/bin/ruff check diagnostics experiments tests benchmarks

video: install ## Render the videos of RUN into RUN/videos (COMPARE='b c' side by side; ALL=1: every weight tensor)
	@test -n "$(RUN)" || { echo "error: RUN is not set. Usage: make video RUN=outputs/gan/<run> [COMPARE='<run> ...'] [JOBS=2] [FPS=12] [ALL=1]" >&2; exit 2; }
	$(PY) -m diagnostics.video $(RUN) $(if $(COMPARE),--compare $(COMPARE)) --jobs $(JOBS) --fps $(FPS)$(if $(ALL), --all-weights)

notebooks: install ## Execute RUN's notebook (by its kind) against it: RUN/notebooks/<kind>.ipynb with figures
	@test -n "$(RUN)" || { echo "error: RUN is not set. Usage: make notebooks RUN=outputs/gan/<run>" >&2; exit 2; }
	$(PY) notebooks/execute.py $(RUN)

evaluate: install ## Evaluate RUN's newest checkpoint on every validation file vs trilinear: RUN/eval.json
	@test -n "$(RUN)" || { echo "error: RUN is not set. Usage: make evaluate RUN=outputs/gan/<run> [CKPT=<checkpoint file>]" >&2; exit 2; }
	$(PY) experiments/evaluate_gan.py $(RUN) $(if $(CKPT),--checkpoint $(CKPT))

report: install ## Write RUN/report.html: one self-contained page (verdict, skill, curves, pictures)
	@test -n "$(RUN)" || { echo "error: RUN is not set. Usage: make report RUN=outputs/gan/<run>" >&2; exit 2; }
	$(PY) -m diagnostics.report $(RUN)

bench: install ## Run the benchmarks (CPU, 1 torch thread each); figures go to the console
	$(PY) benchmarks/diagnostics_overhead.py
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/video.py
	$(PY) benchmarks/health.py

clean-outputs: ## Delete outputs/ (all runs!)
	rm -rf outputs multirun
