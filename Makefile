# make demo: create .venv if missing, install the CPU stack, run the default pipeline on the toy world.
# make test: the test suite (what CI runs), in the same environment: two test files at a time (pytest-xdist;
#   TEST_WORKERS=1 for one), each file on one worker so that its fixtures are built once (tests/conftest.py).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM := false
TEST_WORKERS ?= 2

.PHONY: install demo test lint format bench toy clean

install:
	@bash scripts/install.sh

demo: install
	$(PY) -m distill $(ARGS)

test: install lint
	$(PY) -m pytest -q -ra --durations=25 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check distill tests bench scripts
	$(PY) -m ruff format --check distill tests bench scripts

format: install
	$(PY) -m ruff format distill tests bench scripts
	$(PY) -m ruff check --fix distill tests bench scripts

bench: install
	$(PY) bench/generate_overhead.py

toy: install
	$(PY) scripts/build_toy_world.py

clean:
	rm -rf runs outputs wandb .pytest_cache
