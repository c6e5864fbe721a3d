# Two entry points: `make run` and `make test`. Both install what is missing first.
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: run test lint system-deps runtime-deps bench-list clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

runtime-deps:
	@bash scripts/install-system-deps.sh runtime

system-deps:
	@bash scripts/install-system-deps.sh test

run: $(STAMP) runtime-deps
	$(VENV)/bin/callplane serve

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src tests bench
	$(VENV)/bin/lint-imports

test: $(STAMP) system-deps lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
