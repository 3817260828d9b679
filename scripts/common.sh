# Shared by the project's scripts: install what is missing, idempotently, and build velollm.
# Sourced, not run.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian packages the build needs: cmake and a C++ compiler for llama.cpp, libclang for bindgen, unzip for the
# model wheels, git for the recorded commit, ccache so that a second feature set does not compile llama.cpp
# again; python3 with pip unless a python3 with pip is already on PATH.
debian_packages_needed() {
  echo build-essential cmake libclang-dev pkg-config unzip git ca-certificates ccache
  if ! { command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; }; then
    echo python3 python3-pip
  fi
}

# Debian packages the tests need on top: the sqlite3 command line (loads the SQL export), headless Chromium
# (renders the HTML report so its test can check what a browser shows), jq (runs the guide's example), and
# python3's venv module (Debian ships it apart) for llama-cpp-python's server, the real OpenAI-compatible server
# of the openai backend's tests.
debian_test_packages_needed() {
  echo sqlite3 chromium jq
  if ! { command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }; then
    echo python3-venv
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "error: need root (or sudo) to install: $*" >&2; return 1
  fi
}

# Installs what is missing; `ensure_debian_packages test` adds the packages the tests need.
ensure_debian_packages() {
  local wanted
  wanted="$(debian_packages_needed)"
  if [ "${1:-}" = test ]; then wanted="$wanted $(debian_test_packages_needed)"; fi
  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "note: not a Debian system; make sure these are installed: $(echo $wanted)" >&2
    return 0
  fi
  local missing=() pkg
  for pkg in $wanted; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# llama.cpp's C and C++ through ccache: the build scripts of llama-cpp-sys-2 for different feature sets (and
# `cargo check`) get build directories of their own and would otherwise compile all of llama.cpp again.
# CCACHE_BASEDIR=/ makes the absolute paths of those directories irrelevant to the cache key.
use_ccache() {
  command -v ccache >/dev/null 2>&1 || return 0
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
  export CCACHE_DIR="${CCACHE_DIR:-/var/tmp/velollm-ccache}" CCACHE_BASEDIR=/ CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-3G}"
  mkdir -p "$CCACHE_DIR"
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2; return 1; }
}

# Builds the velollm binary in release mode (llama.cpp's first build takes 10+ minutes on 2 cores).
build_velollm() {
  echo "==> building velollm (release)"
  (cd "$repo_root" && cargo build --release --locked -p velollm-cli)
}

velollm_bin() {
  echo "${CARGO_TARGET_DIR:-$repo_root/target}/release/velollm"
}
