#!/usr/bin/env bash
# Toolchains for aigc-code's evaluation harness (eval/). Idempotent: re-running does nothing
# that is already done. Meant for Debian 12, as root (uses sudo otherwise), with apt and npm
# registry access. What it sets up (see eval/README.md, "Toolchains"):
#   - Debian packages: Go + testify, the rand/regex/md5 Rust crates (offline registry in
#     /usr/share/cargo/registry), Boost and OpenSSL headers; g++, JDK, node/npm, rustc/cargo
#     only if those commands are missing altogether.
#   - npm package js-md5 in ~/.cache/aigc-code/node/node_modules (JavaScript/162 needs it).
#   - prebuilt artefacts in ~/.cache/aigc-code: the Rust crates (rlibs for the rustc first on
#     PATH) and a warm Go build cache. The harness would otherwise build them on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

want=(golang-go golang-github-stretchr-testify-dev librust-rand-dev librust-regex-dev librust-md5-dev
      libboost-dev libssl-dev)
command -v g++ >/dev/null || want+=(g++)
command -v javac >/dev/null || want+=(openjdk-17-jdk-headless)
command -v node >/dev/null || want+=(nodejs)
command -v npm >/dev/null || want+=(npm)
command -v rustc >/dev/null || want+=(rustc)
command -v cargo >/dev/null || want+=(cargo)

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "toolchains: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "toolchains: Debian packages already installed"
fi

CACHE="${AIGC_CODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aigc-code}"
mkdir -p "$CACHE"
if [ -f "$CACHE/node/node_modules/js-md5/package.json" ]; then
  echo "toolchains: js-md5 already in $CACHE/node"
else
  echo "toolchains: npm install js-md5 into $CACHE/node"
  npm install --prefix "$CACHE/node" --no-audit --no-fund --no-save --loglevel=error js-md5@0.8.3
fi

# Prebuild the Rust crates and warm the Go cache with the harness's own code, so the cache key
# and layout are exactly what it looks for (needs the installed package: run after the setup).
PY=${PYTHON:-.venv/bin/python}
PYPATH="${PYTHONPATH:-}"
if ! "$PY" -c "import aigc_code.eval.toolchains" 2>/dev/null; then
  echo "toolchains: install the package first (python3 -m venv .venv && .venv/bin/pip install -e .)" >&2
  exit 1
fi
if ! PYTHONPATH="$PYPATH" "$PY" -m aigc_code.eval.toolchains --prepare; then
  echo "toolchains: WARNING: some toolchain is incomplete (see above); those languages are skipped"
fi
