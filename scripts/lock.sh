#!/usr/bin/env bash
# Regenerates the lock files from pyproject.toml (run after changing a dependency; commit the results):
#   requirements/dev.txt      runtime + dev toolchain + build backend  (`make test`, `make lint`, CI)
#   requirements/runtime.txt  runtime + build backend only             (`make run`)
# Both are universal (any OS, Python >= 3.11), pinned with hashes, and read by plain pip. The runtime lock is
# resolved under the dev lock as a constraint, so the two never disagree on a version. uv does the resolving; it is
# installed into a throw-away venv, never into the project's.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools"
"$tools/bin/pip" install -q "uv==$UV_VERSION"
# Existing pins are kept unless asked otherwise: `scripts/lock.sh --upgrade` or `--upgrade-package NAME`.
compile=("$tools/bin/uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes
  --custom-compile-command "scripts/lock.sh" "$@")
"${compile[@]}" pyproject.toml --extra dev requirements/build.in -o requirements/dev.txt
"${compile[@]}" pyproject.toml requirements/build.in --constraint requirements/dev.txt -o requirements/runtime.txt
echo "requirements/dev.txt: $(grep -c '==' requirements/dev.txt) packages; requirements/runtime.txt: $(grep -c '==' requirements/runtime.txt)"
