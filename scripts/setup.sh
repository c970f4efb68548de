#!/usr/bin/env bash
# Create .venv with RadCheck and its dev/test tools. Idempotent: re-running only installs what changed.
# torch is installed first and pinned (2.13.0): an unpinned torch pulls a multi-GB CUDA build, and later
# releases may drop Volta (V100) kernels. On a V100 host, install the CUDA 12.6 build of torch 2.13.0 first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.radcheck-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=25.1"
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e . --group dev
echo "$want" > "$stamp"
