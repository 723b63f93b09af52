#!/usr/bin/env bash
# Create .venv with fvc, its pinned dependencies and the dev tools. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, by exact version: this machine keeps a CPU build of 2.13.0 on local disk.
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e '.[dev]'
