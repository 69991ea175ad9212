# vlm_lab: `make demo` runs the main experiment, `make test` runs the whole suite.
# Both set up what they need first and skip work already done.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EMBEDDED := checkpoints/shapes
CHECKPOINTS ?= $(EMBEDDED)
# space and publish with CHECKPOINTS=DIR serve your own checkpoints: only the embedded ones are built first
# (`make checkpoints` into a Trainer's run refuses it, and trains the tiny model into a folder of earlier builds)
EMBEDDED_BUILD = $(if $(filter $(EMBEDDED),$(CHECKPOINTS)),@$(MAKE) --no-print-directory checkpoints)
SPACE ?=
PYTEST_ARGS ?=

# No hub, no telemetry: the demo and the tests run on the embedded checkpoints only.
export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1
# The README's checkpoints and numbers on every x86 CPU with AVX2, Intel or AMD: torch's CPU kernels
# pinned for the targets whose numbers are checked (vlm_lab/cpu_kernels.py says why); the notebooks and
# sweeps they start inherit it. Not for lab, space and bench: real models run faster unpinned.
ifneq ($(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo yes),)
PINNED_TARGETS := checkpoints demo test test-fast
$(PINNED_TARGETS): export ATEN_CPU_CAPABILITY ?= avx2
$(PINNED_TARGETS): export MKL_CBWR ?= COMPATIBLE
$(PINNED_TARGETS): export ONEDNN_MAX_CPU_ISA ?= AVX2
endif

# The demo logs W&B offline, as the README says, even where the shell exports WANDB_API_KEY (which would
# log it online to that account); a WANDB_MODE you set wins.
demo: export WANDB_MODE ?= offline

.PHONY: help setup lock browser checkpoints demo test test-fast lab space publish bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
		echo "vlm_lab needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1 || echo missing): run make PYTHON=python3.11 ..." >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install vlm_lab (editable) with dev extras

# A scratch venv resolves pyproject.toml's pins afresh (no constraints), and what it installed becomes
# constraints.txt, header kept; torch without its local build tag, so a CUDA build of it satisfies it too.
lock:  ## re-resolve pyproject.toml's pins and write every installed version to constraints.txt
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-lock/bin/python -m pip install --quiet torch==2.13.0
	$(VENV)-lock/bin/python -m pip install --quiet -e ".[dev]"
	{ sed '/^#/!d' constraints.txt; $(VENV)-lock/bin/python -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf $(VENV)-lock
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) packages; run make setup to install them"

browser:  ## install Debian chromium for the browser tests (needs root or sudo)
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
		else echo "chromium is missing and installing it needs root: run 'apt-get install chromium' as root," \
			"or 'make test-fast' (the suite without the browser tests)" >&2; exit 1; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

checkpoints: $(STAMP)  ## train the embedded tiny shapes checkpoints (skipped when present)
	$(BIN)/vlm-lab checkpoints build --out $(CHECKPOINTS)

demo: checkpoints  ## the main job on the embedded default
	@mkdir -p runs/demo
	$(BIN)/python scripts/run_notebook.py --no-progress-bar notebooks/02_compare_checkpoints.ipynb runs/demo/02_compare_checkpoints.ipynb \
		-p checkpoints $(CHECKPOINTS) -p output_dir runs/demo
	@$(BIN)/vlm-lab show runs/demo --by question_type
	@echo "executed notebook: runs/demo/02_compare_checkpoints.ipynb (open it with make lab)"
	$(BIN)/vlm-lab sweep sweeps/shapes-ablation.yaml
	$(BIN)/python scripts/run_notebook.py --no-progress-bar notebooks/04_ablation_report.ipynb runs/shapes-ablation/04_ablation_report.ipynb -p sweep_dir runs/shapes-ablation
	@echo "ablation report: runs/shapes-ablation/04_ablation_report.ipynb (table: runs/shapes-ablation/summary.md)"

test: $(STAMP) browser  ## set up, then run the whole suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the suite without slow and browser tests
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

lab: checkpoints  ## JupyterLab on the notebooks (notebooks/.jupyter/: uploads up to 256 MiB, not 10)
	JUPYTER_CONFIG_PATH=$(CURDIR)/notebooks/.jupyter$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH} $(BIN)/jupyter lab notebooks/

space: $(STAMP)  ## serve the Space locally on 127.0.0.1:7860, as on Hugging Face [CHECKPOINTS=DIR]
	$(EMBEDDED_BUILD)
	VLM_LAB_ROOT=$(CURDIR) GRADIO_EXAMPLES_CACHE=$(CURDIR)/.cache/gradio-examples \
		$(if $(filter-out $(EMBEDDED),$(CHECKPOINTS)),VLM_LAB_CHECKPOINTS=$(CHECKPOINTS)) $(BIN)/python space/app.py

publish: $(STAMP)  ## publish the Space: make publish SPACE=owner/name [CHECKPOINTS=DIR] [ARGS="--dry-run"]
	@test -n "$(SPACE)" || { echo "usage: make publish SPACE=owner/name [ARGS='--hardware t4-small']"; exit 2; }
	$(EMBEDDED_BUILD)
	HF_HUB_OFFLINE=0 $(BIN)/python scripts/publish_space.py $(SPACE) --checkpoints $(CHECKPOINTS) $(ARGS)

bench: checkpoints  ## run the speed benchmarks (prints ratios)
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:  ## remove build outputs (keeps .venv)
	rm -rf runs artifacts .pytest_cache test-artifacts
