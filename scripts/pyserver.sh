#!/usr/bin/env bash
# Installs llama-cpp-python's OpenAI-compatible server (PyPI `llama-cpp-python[server]`) into a virtual
# environment outside the clone, for the openai backend's real-server tests. Idempotent: a venv whose marker
# names this version is left alone, so the test command can call it every time. pip builds llama.cpp from
# source for it (about 7 minutes on 2 cores; through ccache when it is installed).
#
# Destination: $VELOLLM_PYSERVER, else /var/tmp/velollm-pyserver (cached like the cargo target directory).
# Prints the venv's python on the last line of its output.
set -euo pipefail

version=0.3.36
venv="${VELOLLM_PYSERVER:-/var/tmp/velollm-pyserver}"
marker="$venv/.velollm-llama-cpp-python-$version"

if [ -f "$marker" ] && "$venv/bin/python" -c 'import llama_cpp.server' >/dev/null 2>&1; then
  echo "$venv/bin/python"
  exit 0
fi

python_bin=$(command -v python3 || true)
[ -n "$python_bin" ] || { echo "error: python3 is needed for llama-cpp-python's server" >&2; exit 1; }
if ! "$python_bin" -m venv --help >/dev/null 2>&1; then
  echo "error: python3's venv module is missing (Debian: apt-get install python3-venv)" >&2
  exit 1
fi

echo "==> installing llama-cpp-python[server]==$version into $venv (builds llama.cpp from source)" >&2
rm -rf "$venv"
"$python_bin" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >&2
cmake_args="${CMAKE_ARGS:-}"
if command -v ccache >/dev/null 2>&1; then
  cmake_args="$cmake_args -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
  export CCACHE_DIR="${CCACHE_DIR:-/var/tmp/velollm-ccache}" CCACHE_BASEDIR=/
fi
CMAKE_ARGS="$cmake_args" "$venv/bin/python" -m pip install -q "llama-cpp-python[server]==$version" >&2
"$venv/bin/python" -c 'import llama_cpp.server' >&2
touch "$marker"
echo "$venv/bin/python"
