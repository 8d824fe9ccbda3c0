#!/usr/bin/env bash
# Makes the Python environment that tests/engine.rs uses to run a real engine: a virtualenv
# with llama.cpp's server (llama-cpp-python[server]) and the gguf writer that makes the test
# model. pip builds llama.cpp from source (about 5 minutes on 2 cores, 13 under load), so the
# built wheel is kept in a cache folder and later runs on the same machine install it from there.
#
#   INFERLAT_CACHE   cache folder (default ${XDG_CACHE_HOME:-$HOME/.cache}/inferlat)
#   INFERLAT_PYTHON  where tests/engine.rs finds the interpreter (default $INFERLAT_CACHE/venv/bin/python)
#
# Prints the interpreter's path on its last line.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
GGUF_VERSION="0.19.0"

cache="${INFERLAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inferlat}"
venv="$cache/venv"
wheels="$cache/wheels"
mkdir -p "$wheels"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
  echo "python-env: no $python on this machine" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" >&2; then
    # Debian ships venv's ensurepip apart (python3-venv); install it where we may.
    rm -rf "$venv"
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
    $SUDO apt-get update -qq >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    "$python" -m venv "$venv" >&2
  fi
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)

if ! "$venv/bin/python" -c "import llama_cpp, llama_cpp.server, gguf, sse_starlette, uvicorn" 2>/dev/null \
  || [ "$("$venv/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)')" != "$LLAMA_CPP_PYTHON_VERSION" ]; then
  if ! ls "$wheels"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION"-*.whl >/dev/null 2>&1; then
    echo "python-env: building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION from source (once; kept in $wheels)" >&2
    # A portable CPU build: no CUDA, no native-only instructions, so the cached wheel runs on
    # any x86-64 machine that shares the cache.
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF}" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      "${pip[@]}" wheel --no-deps --wheel-dir "$wheels" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
  fi
  "${pip[@]}" install --quiet --find-links "$wheels" \
    "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION" "gguf==$GGUF_VERSION" >&2
fi
echo "$venv/bin/python"
