# Two entry points: `make run` and `make test`. Both install what is missing first, from the lock files in
# requirements/ (pinned with hashes; regenerate them with `make lock` after changing pyproject.toml).
#   make run   the runtime only (requirements/runtime.txt) + espeak-ng when it can; starts the node
#   make test  the dev toolchain too (requirements/dev.txt) + the Debian test peers; lint, then pytest
# A stamp named after the lock's checksum skips the install while the lock (and pyproject.toml) are unchanged.
VENV      := .venv
PY        := $(VENV)/bin/python
DEV_LOCK  := requirements/dev.txt
RUN_LOCK  := requirements/runtime.txt
sum        = $(shell cat $(1) pyproject.toml | cksum | cut -d' ' -f1)
DEV_STAMP := $(VENV)/.installed-dev-$(call sum,$(DEV_LOCK))
RUN_STAMP := $(VENV)/.installed-runtime-$(call sum,$(RUN_LOCK))
PYTEST_ARGS ?=

.PHONY: run test lint lock system-deps runtime-deps bench-list clean

# Install one lock, then callplane itself (editable, with the locked build backend: nothing unpinned is fetched).
define install_lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r $(1)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
endef

# The dev lock is a superset of the runtime lock (same versions), so it satisfies `make run` too.
$(DEV_STAMP): $(DEV_LOCK) pyproject.toml
	$(call install_lock,$(DEV_LOCK))
	@rm -f $(VENV)/.installed-*
	@touch $@ $(RUN_STAMP)

$(RUN_STAMP): $(RUN_LOCK) pyproject.toml
	$(call install_lock,$(RUN_LOCK))
	@rm -f $(VENV)/.installed-runtime-*
	@touch $@

runtime-deps:
	@bash scripts/install-system-deps.sh runtime

system-deps:
	@bash scripts/install-system-deps.sh test

run: $(RUN_STAMP) runtime-deps
	$(VENV)/bin/callplane serve

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src tests bench
	$(VENV)/bin/lint-imports

test: $(DEV_STAMP) system-deps lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lock:
	bash scripts/lock.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
