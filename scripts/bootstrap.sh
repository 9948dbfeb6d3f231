#!/usr/bin/env bash
# Create .venv and install recassist with the given extras (default: local).
# The first install compiles llama-cpp-python (~8 min on 2 cores); progress is printed as it
# builds, and pip's wheel cache makes every later install take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-local}"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
# torch first and pinned to the CPU build this project was tested with: an unpinned torch
# would pull a several-GB CUDA build through sentence-transformers.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip wheel setuptools
fi
# pip warns about every local index folder it cannot use; those lines are noise to a user.
pip_() { "$VENV/bin/pip" "$@" 2> >(grep -v "^WARNING: Location" >&2); }

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  say "installing $TORCH_SPEC (CPU)"
  pip_ install -q "$TORCH_SPEC"
fi

if [[ "$EXTRAS" == *local* ]] && ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  say "installing llama-cpp-python: the first time compiles llama.cpp (~8 min on 2 cores)"
  start=$(date +%s)
  pip_ install -v "llama-cpp-python[server]>=0.3.16" 2>&1 | while IFS= read -r line; do
    if [[ "$line" =~ \[([0-9]+)/([0-9]+)\] ]]; then
      printf '\r[setup] compiling llama.cpp: step %s of %s (%ss elapsed)   ' \
        "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "$(( $(date +%s) - start ))" >&2
    elif [[ "$line" =~ ^(Successfully|ERROR|error:) ]]; then
      printf '\n%s\n' "$line" >&2
    elif [[ "$line" =~ (Using cached|Building wheel|Created wheel) ]]; then
      printf '%s\n' "${line:0:160}" >&2
    fi
  done
  "$VENV/bin/python" -c "import llama_cpp" || { say "llama-cpp-python failed to install; see the output above"; exit 1; }
fi

say "installing recassist[$EXTRAS]"
pip_ install -q -e ".[$EXTRAS]"
say "done: $("$VENV/bin/recassist" --version)"
