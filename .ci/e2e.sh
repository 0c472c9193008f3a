#!/usr/bin/env bash
# End-to-end test of the VS Code extension in a real VS Code workbench (called by .ci/editors.sh).
#
# Installs, from the registries only: Debian's `chromium` (+ the build headers code-server's native
# modules need), npm `code-server` at the newest version that runs on this Node, npm `playwright-core`
# (drives the system Chromium; no browser download). Then installs the freshly built .vsix into a private
# code-server, opens a workspace and runs editors/vscode/e2e/run.js (ghost text in Python and JavaScript,
# Tab inserts exactly it, auto-closed bracket, status ready only after the model loaded, a settings change
# reaches the server, restart). Screenshots of each step go to $AIGC_E2E_SHOTS (printed).
#
# Usage: .ci/e2e.sh path/to/aigc-code.vsix
# Environment: AIGC_CODE_BIN, AIGC_TEST_MODEL (as editors.sh), AIGC_E2E_CACHE (npm install cache folder,
# default ~/.cache/aigc-code-e2e: reused by local runs; CI starts from a fresh machine),
# AIGC_E2E_SHOTS (screenshot folder; default: a fresh folder under ${TMPDIR:-/tmp}).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vsix=$(realpath "${1:?usage: e2e.sh path/to/aigc-code.vsix}")
t_start=$(date +%s)

log() { printf '\n==== e2e: %s (%s)\n' "$*" "$(date +%T)"; }
have() { command -v "$1" >/dev/null 2>&1; }

CODE_SERVER_VERSION=${CODE_SERVER_VERSION:-4.100.3} # newest code-server whose engines allow Node 20
PLAYWRIGHT_VERSION=${PLAYWRIGHT_VERSION:-1.65.1}
RIPGREP_PKG_VERSION=1.15.11 # @vscode/ripgrep version code-server $CODE_SERVER_VERSION depends on
RIPGREP_ASSET=ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz

# -- system packages --------------------------------------------------------------------------------
need=()
have chromium || need+=(chromium)
have rg || need+=(ripgrep)
for pkg in libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev pkg-config build-essential; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  log "apt-get install ${need[*]}"
  if [ "$(id -u)" -ne 0 ] || ! have apt-get; then
    echo "missing ${need[*]}; install them with apt-get" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# -- npm packages (cached between local runs) -------------------------------------------------------
cache=${AIGC_E2E_CACHE:-$HOME/.cache/aigc-code-e2e}
cs_dir="$cache/code-server-$CODE_SERVER_VERSION"
pw_dir="$cache/playwright-core-$PLAYWRIGHT_VERSION"
mkdir -p "$cache"
if [ ! -x "$cs_dir/node_modules/.bin/code-server" ]; then
  log "npm install code-server@$CODE_SERVER_VERSION"
  # @vscode/ripgrep's postinstall downloads rg from the internet: seed its cache with Debian's rg.
  rg_tmp=${TMPDIR:-/tmp}
  rg_cache="$rg_tmp/vscode-ripgrep-cache-$RIPGREP_PKG_VERSION"
  mkdir -p "$rg_cache"
  if [ ! -s "$rg_cache/$RIPGREP_ASSET" ]; then
    rg_stage=$(mktemp -d)
    cp "$(command -v rg)" "$rg_stage/rg"
    tar czf "$rg_cache/$RIPGREP_ASSET" -C "$rg_stage" rg
    rm -rf "$rg_stage"
  fi
  rm -rf "$cs_dir.partial"
  mkdir -p "$cs_dir.partial"
  (
    cd "$cs_dir.partial"
    echo '{"private": true}' >package.json
    # node-pty's install asks for confirmation; argon2 falls back to a source build against Node's headers.
    JOBS=max npm_config_yes=true npm_config_nodedir=/usr npm_config_build_from_source_argon2=true \
      nice npm install --no-audit --no-fund --loglevel=error --unsafe-perm "code-server@$CODE_SERVER_VERSION"
  )
  rm -rf "$cs_dir"
  mv "$cs_dir.partial" "$cs_dir"
fi
if [ ! -d "$pw_dir/node_modules/playwright-core" ]; then
  log "npm install playwright-core@$PLAYWRIGHT_VERSION (system Chromium; no browser download)"
  rm -rf "$pw_dir"
  mkdir -p "$pw_dir"
  (
    cd "$pw_dir"
    echo '{"private": true}' >package.json
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 nice npm install --no-audit --no-fund --loglevel=error "playwright-core@$PLAYWRIGHT_VERSION"
  )
fi
t_installed=$(date +%s)
echo "installs took $((t_installed - t_start)) s"

# -- run --------------------------------------------------------------------------------------------
shots=${AIGC_E2E_SHOTS:-$(mktemp -d "${TMPDIR:-/tmp}/aigc-e2e-shots.XXXXXX")}
mkdir -p "$shots"
log "screenshots: $shots"
export AIGC_E2E_SHOTS="$shots"
export AIGC_E2E_CODE_SERVER="$cs_dir/node_modules/.bin/code-server"
export AIGC_E2E_CHROMIUM=${AIGC_E2E_CHROMIUM:-$(command -v chromium)}
export AIGC_E2E_VSIX="$vsix"
export NODE_PATH="$pw_dir/node_modules${NODE_PATH:+:$NODE_PATH}"
set +e
timeout 480 node "$repo/editors/vscode/e2e/run.js"
status=$?
set -e
t_end=$(date +%s)
echo "e2e: test $((t_end - t_installed)) s, total $((t_end - t_start)) s (installs included); screenshots in $shots"
exit "$status"
