#!/usr/bin/env bash
# Headless Neovim tests for the aigc_code plugin.
#
#   editors/nvim/tests/run.sh
#
# 1. unit.lua: pure helpers (no server).
# 2. e2e.lua: real `nvim --headless` against the real `aigc-code serve`, with a tiny random model
#    built by aigc_code.testing.make_tiny_model (seconds), unless AIGC_TEST_MODEL names one
#    (AIGC_TEST_MODEL=default uses the server's built-in model).
#
# Environment: NVIM (default nvim), AIGC_CODE_BIN (default <repo>/.venv/bin/aigc-code, then PATH),
# PYTHON (default <repo>/.venv/bin/python, then python3), AIGC_TEST_MODEL, AIGC_TEST_TIMEOUT_MS.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
plugin=$(cd "$here/.." && pwd)
repo=$(cd "$plugin/../.." && pwd)
NVIM=${NVIM:-nvim}

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

work=$(mktemp -d "${TMPDIR:-/tmp}/aigc-nvim-test.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

echo "== nvim: $("$NVIM" --version | head -1)"

# -- unit tests ------------------------------------------------------------------------------------
timeout 60 "$NVIM" --headless --clean -n --cmd "set rtp^=$plugin" \
  -c "lua local ok, r = pcall(dofile, '$here/unit.lua'); if not ok then io.stdout:write('ERROR '..tostring(r)..'\n') end; vim.cmd(ok and r == 0 and 'qall!' or 'cquit 1')" \
  </dev/null
echo

# -- end-to-end ------------------------------------------------------------------------------------
if [ -z "$AIGC_CODE_BIN" ] || [ ! -x "$AIGC_CODE_BIN" ]; then
  echo "aigc-code executable not found (set AIGC_CODE_BIN)" >&2
  exit 1
fi
echo "== server: $AIGC_CODE_BIN"

model=${AIGC_TEST_MODEL:-}
if [ -z "$model" ]; then
  echo "== building a tiny model"
  model=$("$PYTHON" -c "import sys; from aigc_code.testing import make_tiny_model; print(make_tiny_model(sys.argv[1]))" "$work/model" | tail -n 1)
elif [ "$model" = default ]; then
  model=""
fi
echo "== model: ${model:-(built-in default)}"

log="$work/server.log"
status=0
AIGC_CODE_BIN="$AIGC_CODE_BIN" AIGC_TEST_MODEL="$model" AIGC_TEST_LOG="$log" AIGC_TEST_DIR="$work" \
  timeout "${AIGC_TEST_WALL_S:-600}" "$NVIM" --headless --clean -n -i NONE --cmd "set rtp^=$plugin noshowmode shortmess+=F" \
  -c "luafile $here/e2e.lua" </dev/null || status=$?

if [ "$status" -ne 0 ]; then
  echo "e2e failed (exit $status)" >&2
  for f in "$log" "$(dirname "$log")"/*.log; do
    if [ -f "$f" ]; then
      echo "---- $f (tail)" >&2
      tail -n 60 "$f" >&2
    fi
  done
  lsp_log=$(cd "$work" && "$NVIM" --headless --clean -n -c 'lua io.stdout:write(vim.lsp.get_log_path())' -c 'qall!' 2>/dev/null || true)
  if [ -n "$lsp_log" ] && [ -f "$lsp_log" ]; then
    echo "---- $lsp_log (tail)" >&2
    tail -n 40 "$lsp_log" >&2
  fi
  exit "$status"
fi
