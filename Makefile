# Every target installs what it needs into .venv first, so a fresh clone needs only
# Python 3.10+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser screenshots bench bench-compare lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## a checkout across four HTTP services, through an outage and a SIGKILL, narrated
	$(BIN)/python examples/checkout/run_demo.py

test: $(STAMP) browser  ## the whole test suite
	$(BIN)/python -m pytest -n 2 --dist worksteal

browser:  ## Debian's chromium, for the dashboard's browser tests (installed when missing)
	bash scripts/ensure-browser.sh

screenshots: $(STAMP) browser  ## docs/img/dashboard-*.png: the dashboard on a small shop's workflows
	$(BIN)/python docs/img/make_screenshots.py

bench: $(STAMP)  ## the benchmark of ../shared/BENCHMARK.md; numbers go to docs/performance.md
	$(BIN)/python bench/run.py

# make bench-compare OLD=main NEW=HEAD [ARGS="--quick --store sqlite"]; NEW=. is src/ as is
bench-compare: $(STAMP)  ## the benchmark of two revisions in turns: a before/after table
	@test -n "$(OLD)" -a -n "$(NEW)" || { echo "usage: make bench-compare OLD=rev NEW=rev [ARGS=...]"; exit 2; }
	$(BIN)/python bench/compare.py $(OLD) $(NEW) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: example
example: $(STAMP)  ## one example of examples/, e.g. make example NAME=chaining (checkout: make demo)
	@test -f "examples/$(NAME)/main.py" || { echo "usage: make example NAME=<$$(cd examples && ls */main.py | cut -d/ -f1 | paste -sd'|' -)>" >&2; exit 2; }
	$(BIN)/python examples/$(NAME)/main.py
