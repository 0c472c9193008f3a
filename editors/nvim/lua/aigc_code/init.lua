-- aigc_code: Neovim client for the aigc-code LSP server (`aigc-code serve`).
--
--   require("aigc_code").setup({ cmd = { "aigc-code", "serve" }, filetypes = { "python", ... } })
--
-- Starts one server per project root and attaches it to buffers of the configured filetypes
-- (vim.lsp.start on 0.8+, vim.lsp.start_client + buf_attach_client on 0.7). Inline completions use
-- Neovim's native `vim.lsp.inline_completion` when present (0.12+); otherwise this plugin requests
-- `textDocument/inlineCompletion` itself (or `textDocument/completion` for servers without it) after a
-- debounce and shows the suggestion as virtual text.

local util = require("aigc_code.util")

local api = vim.api
local uv = util.uv

local M = {}

local NAME = "aigc_code"
local ns = api.nvim_create_namespace("aigc_code")

local LANGUAGES = {
  "python", "javascript", "javascriptreact", "typescript", "typescriptreact",
  "go", "rust", "java", "c", "cpp",
}

local defaults = {
  -- Command line of the server. When nil it is built from server_path, model, adapter, backend,
  -- log_file and extra_args.
  cmd = nil,
  server_path = "aigc-code",
  model = nil,
  adapter = nil,
  backend = nil, -- "local" | "openai"
  endpoint = nil, -- URL of the OpenAI-compatible server for backend = "openai"
  device = nil, -- "auto" | "cpu" | "cuda" | "cuda:1" (local backend)
  fim_format = nil, -- openai backend: "starcoder", "qwen", ..., "suffix" or a "{prefix}{suffix}" template
  log_file = nil,
  extra_args = {},
  cmd_env = nil, -- extra environment variables for the server
  filetypes = LANGUAGES,
  root_markers = { ".git", "pyproject.toml", "setup.py", "package.json", "go.mod", "Cargo.toml",
    "pom.xml", "build.gradle", "CMakeLists.txt", "compile_commands.json", "Makefile" },
  -- Sent to the server as initializationOptions.aigcCode and workspace/didChangeConfiguration
  -- (keys: maxNewTokens, temperature, debounceMs, enabledLanguages, ...).
  settings = {},
  enabled = true,
  auto_trigger = true,
  debounce_ms = 75, -- client-side debounce before sending a request (the server debounces too)
  native = "auto", -- use vim.lsp.inline_completion when the running Neovim has it
  keymaps = {
    accept = "<Tab>", -- falls through to the key's normal behaviour when there is no suggestion
    dismiss = "<C-]>",
  },
  hl_group = "AigcCodeSuggestion",
  on_attach = nil, -- function(client, bufnr)
}

M.config = vim.deepcopy(defaults)

-- Runtime state ------------------------------------------------------------------------------------

local state = {
  status = { kind = "idle" },
  timer = nil,
  seq = 0,
  pending = nil, -- { client, id }
  suggestion = nil, -- see show()
  clients = {}, -- root_dir -> client id (0.7 path)
  attached = {}, -- bufnr -> true
}

-- Hooks for tests: called with (method, params, result) for every response this plugin receives.
M._on_response = nil

local function notify(msg, level)
  vim.notify("aigc-code: " .. msg, level or vim.log.levels.INFO)
end

local function set_status(kind, extra)
  local s = { kind = kind, latency_ms = state.status.latency_ms }
  for k, v in pairs(extra or {}) do
    s[k] = v
  end
  state.status = s
  if vim.g then
    vim.g.aigc_code_status = util.format_status(s)
  end
  pcall(api.nvim_exec_autocmds, "User", { pattern = "AigcCodeStatus", modeline = false })
end

local function native_available()
  local ic = vim.lsp.inline_completion
  return type(ic) == "table" and type(ic.enable) == "function" and type(ic.get) == "function"
end

local function use_native()
  local n = M.config.native
  if n == false or n == "never" then
    return false
  end
  return native_available()
end

-- Client helpers ------------------------------------------------------------------------------------

local function named(clients)
  local out = {}
  for _, c in pairs(clients) do
    if c.name == NAME then
      table.insert(out, c)
    end
  end
  return out
end

local function get_clients(bufnr)
  if vim.lsp.get_clients then
    return vim.lsp.get_clients({ bufnr = bufnr, name = NAME })
  end
  return named(vim.lsp.buf_get_clients(bufnr))
end

local function stopped(c)
  if util.has_011 then
    return c:is_stopped()
  end
  return c.is_stopped()
end

local function client_for(bufnr)
  for _, c in ipairs(get_clients(bufnr)) do
    if not stopped(c) then
      return c
    end
  end
end

local function crequest(client, method, params, handler, bufnr)
  if util.has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

local function ccancel(client, id)
  if util.has_011 then
    return client:cancel_request(id)
  end
  return client.cancel_request(id)
end

local function cnotify(client, method, params)
  if util.has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

-- The backend shorthands in the config: config key, the server setting it sets (unless `settings` names
-- it), and the `aigc-code serve --check` flag that checks the same value. The server itself gets them once,
-- in initializationOptions (and didChangeConfiguration), never also on its command line.
local BACKEND_KEYS = {
  { "model", "model", "--model" },
  { "adapter", "adapter", "--adapter" },
  { "backend", "backend", "--backend" },
  { "endpoint", "endpoint", "--endpoint" },
  { "device", "device", "--device" },
  { "fim_format", "fimFormat", "--fim-format" },
}

local function server_settings()
  local s = vim.deepcopy(M.config.settings or {})
  for _, row in ipairs(BACKEND_KEYS) do
    local value, setting = M.config[row[1]], row[2]
    if value and s[setting] == nil then
      s[setting] = value
    end
  end
  return s
end

--- The server command line for the current config: only the launch options (`--log-file`, extra_args).
function M.server_cmd()
  local c = M.config
  if c.cmd then
    return vim.deepcopy(c.cmd)
  end
  local cmd = { c.server_path, "serve" }
  if c.log_file then
    vim.list_extend(cmd, { "--log-file", c.log_file })
  end
  vim.list_extend(cmd, c.extra_args or {})
  return cmd
end

--- `aigc-code serve --check ...` with the backend options as flags, so that it checks what the editor uses.
function M.check_cmd()
  local c = M.config
  local cmd = M.server_cmd()
  table.insert(cmd, "--check")
  if c.cmd then
    return cmd
  end
  for _, row in ipairs(BACKEND_KEYS) do
    local value = c[row[1]]
    if value then
      vim.list_extend(cmd, { row[3], value })
    end
  end
  return cmd
end

local function find_root(bufnr)
  local name = api.nvim_buf_get_name(bufnr)
  local start = name ~= "" and vim.fn.fnamemodify(name, ":p:h") or vim.fn.getcwd()
  if vim.fs and vim.fs.find then
    local found = vim.fs.find(M.config.root_markers, { path = start, upward = true })[1]
    if found then
      return vim.fn.fnamemodify(found, ":h")
    end
  else
    local dir = start
    while dir and dir ~= "" do
      for _, m in ipairs(M.config.root_markers) do
        if vim.fn.glob(dir .. "/" .. m) ~= "" then
          return dir
        end
      end
      local parent = vim.fn.fnamemodify(dir, ":h")
      if parent == dir then
        break
      end
      dir = parent
    end
  end
  return start
end

local function capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.textDocument = caps.textDocument or {}
  caps.textDocument.inlineCompletion = caps.textDocument.inlineCompletion or { dynamicRegistration = false }
  -- The aigc-code contract is UTF-16 positions; do not let the server pick utf-8 from our list.
  caps.general = caps.general or {}
  caps.general.positionEncodings = { "utf-16" }
  return caps
end

-- Suggestion display ---------------------------------------------------------------------------------

local function clear_suggestion()
  local s = state.suggestion
  state.suggestion = nil
  if s and api.nvim_buf_is_valid(s.bufnr) then
    api.nvim_buf_clear_namespace(s.bufnr, ns, 0, -1)
  end
end

local function cancel_pending()
  if state.timer then
    state.timer:stop()
  end
  local p = state.pending
  state.pending = nil
  if p and p.id then
    pcall(ccancel, p.client, p.id)
  end
  if state.status.kind == "generating" then
    set_status("ready")
  end
end

--- Insertion point: in Insert mode the cursor column; in Normal mode after the character under the
--- cursor (like `a`).
local function insertion_point()
  local cursor = api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  local mode = api.nvim_get_mode().mode
  if mode:sub(1, 1) ~= "i" and mode:sub(1, 1) ~= "R" then
    local line = api.nvim_buf_get_lines(0, row, row + 1, false)[1] or ""
    if #line > 0 then
      local b = line:byte(col + 1)
      col = math.min(#line, col + (b and (b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC0 and 2 or 1) or 0))
    end
  end
  return row, col
end

local function render(s)
  api.nvim_buf_clear_namespace(s.bufnr, ns, 0, -1)
  local hl = M.config.hl_group
  local ts = vim.bo[s.bufnr].tabstop
  local lines = s.plan.lines
  local line = api.nvim_buf_get_lines(s.bufnr, s.row, s.row + 1, false)[1] or ""
  local opts = { hl_mode = "combine", priority = 1000 }
  local first = util.display(lines[1], ts)
  if first ~= "" then
    opts.virt_text = { { first, hl } }
    if util.has_010 then
      opts.virt_text_pos = "inline"
    elseif s.col >= #line then
      opts.virt_text_pos = "overlay"
    else
      opts.virt_text_pos = "eol"
    end
  end
  if #lines > 1 then
    local vl = {}
    for i = 2, #lines do
      table.insert(vl, { { util.display(lines[i], ts), hl } })
    end
    opts.virt_lines = vl
  end
  s.extmark = api.nvim_buf_set_extmark(s.bufnr, ns, s.row, math.min(s.col, #line), opts)
end

local function show(bufnr, row, col, item, encoding)
  local get_line = function(r)
    return api.nvim_buf_get_lines(bufnr, r, r + 1, false)[1]
  end
  local plan = util.plan(item, get_line, row, col, encoding)
  if not plan then
    return false
  end
  clear_suggestion()
  state.suggestion = {
    bufnr = bufnr,
    row = row,
    col = col,
    plan = plan,
    tick = api.nvim_buf_get_changedtick(bufnr),
    item = item,
    encoding = encoding,
  }
  render(state.suggestion)
  return true
end

--- The current suggestion if it is still valid for the cursor; re-plans after type-through.
local function current_suggestion()
  local s = state.suggestion
  if not s or not api.nvim_buf_is_valid(s.bufnr) or api.nvim_get_current_buf() ~= s.bufnr then
    return nil
  end
  local row, col = insertion_point()
  if s.row == row and s.col == col and s.tick == api.nvim_buf_get_changedtick(s.bufnr) then
    return s
  end
  -- The user typed (part of) the suggestion: keep showing the rest.
  if row ~= s.row or col < s.col or s.plan.sr ~= row or s.plan.tail == nil then
    return nil
  end
  local line = api.nvim_buf_get_lines(s.bufnr, row, row + 1, false)[1] or ""
  local p = s.plan
  local typed = line:sub(p.sc + 1, col)
  local ec = col + p.tail
  if ec > #line or p.text:sub(1, #typed) ~= typed or #typed >= #p.text then
    return nil
  end
  local plan = {
    sr = p.sr, sc = p.sc, er = row, ec = ec, tail = p.tail, text = p.text,
    lines = vim.split(p.text:sub(#typed + 1), "\n", { plain = true }),
  }
  s.plan, s.col, s.tick = plan, col, api.nvim_buf_get_changedtick(s.bufnr)
  render(s)
  return s
end

-- Requests ------------------------------------------------------------------------------------------

local function handle_items(bufnr, row, col, tick, items, encoding)
  if api.nvim_get_current_buf() ~= bufnr or api.nvim_buf_get_changedtick(bufnr) ~= tick then
    return false
  end
  local r, c = insertion_point()
  if r ~= row or c ~= col then
    return false
  end
  for _, item in ipairs(items) do
    if show(bufnr, row, col, item, encoding) then
      return true
    end
  end
  return false
end

--- Request a suggestion at the cursor. opts.manual: explicit trigger (messages, Invoked trigger kind).
function M.request(opts)
  opts = opts or {}
  local bufnr = api.nvim_get_current_buf()
  if not M.config.enabled and not opts.manual then
    return
  end
  local client = client_for(bufnr)
  if not client then
    if opts.manual then
      notify("no aigc-code server attached to this buffer", vim.log.levels.WARN)
    end
    return
  end
  cancel_pending()
  clear_suggestion()
  local row, col = insertion_point()
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local encoding = client.offset_encoding or "utf-16"
  local position = { line = row, character = util.units_from_byte(line, col, encoding) }
  local caps = client.server_capabilities or {}
  local method, params, normalize
  if caps.inlineCompletionProvider or not caps.completionProvider then
    method = "textDocument/inlineCompletion"
    params = {
      textDocument = { uri = vim.uri_from_bufnr(bufnr) },
      position = position,
      context = { triggerKind = opts.manual and 1 or 2 },
    }
    normalize = util.normalize_inline
  else
    method = "textDocument/completion"
    params = {
      textDocument = { uri = vim.uri_from_bufnr(bufnr) },
      position = position,
      context = { triggerKind = 1 },
    }
    normalize = util.completion_to_inline
  end
  state.seq = state.seq + 1
  local seq = state.seq
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local t0 = uv.hrtime()
  set_status("generating")
  local ok, id = crequest(client, method, params, function(err, result)
    if seq ~= state.seq then
      return -- superseded
    end
    state.pending = nil
    local latency = math.floor((uv.hrtime() - t0) / 1e6)
    if M._on_response then
      pcall(M._on_response, method, params, result, err)
    end
    if err then
      if err.code == -32800 or err.code == -32801 then -- cancelled / content modified
        set_status("ready")
        return
      end
      set_status("error", { message = err.message or tostring(err.code), latency_ms = latency })
      if opts.manual then
        notify("completion failed: " .. tostring(err.message), vim.log.levels.ERROR)
      end
      return
    end
    set_status("ready", { latency_ms = latency })
    local shown = handle_items(bufnr, row, col, tick, normalize(result), encoding)
    if not shown and opts.manual then
      notify("no suggestion")
    end
  end, bufnr)
  if ok then
    state.pending = { client = client, id = id }
  else
    set_status("error", { message = "request failed (server not running?)" })
  end
end

local function debounce()
  if not state.timer then
    state.timer = uv.new_timer()
  end
  state.timer:stop()
  state.timer:start(M.config.debounce_ms, 0, vim.schedule_wrap(function()
    local mode = api.nvim_get_mode().mode
    if mode:sub(1, 1) == "i" and state.attached[api.nvim_get_current_buf()] then
      M.request({ manual = false })
    end
  end))
end

-- Public actions -------------------------------------------------------------------------------------

--- True when a suggestion is displayed at the cursor.
function M.has_suggestion()
  return current_suggestion() ~= nil
end

--- The text the current suggestion would insert (whole item text) or nil.
function M.get_suggestion()
  local s = current_suggestion()
  return s and s.plan.text or nil
end

--- Accept the current suggestion. Returns true if something was inserted.
function M.accept()
  local s = current_suggestion()
  if not s then
    return false
  end
  local p = s.plan
  clear_suggestion()
  cancel_pending()
  local lines = vim.split(p.text, "\n", { plain = true })
  api.nvim_buf_set_text(s.bufnr, p.sr, p.sc, p.er, p.ec, lines)
  local er, ec = util.end_of_insert(p.sr, p.sc, p.text)
  local mode = api.nvim_get_mode().mode
  if mode:sub(1, 1) ~= "i" and mode:sub(1, 1) ~= "R" then
    ec = math.max(0, ec - 1)
  end
  api.nvim_win_set_cursor(0, { er + 1, ec })
  -- the cursor move and text change must not immediately dismiss a follow-up suggestion
  return true
end

--- Hide the current suggestion (and any native one). Returns true if one was shown.
function M.dismiss()
  local had = state.suggestion ~= nil
  cancel_pending()
  clear_suggestion()
  if use_native() then
    local bufnr = api.nvim_get_current_buf()
    if vim.lsp.inline_completion.is_enabled and vim.lsp.inline_completion.is_enabled({ bufnr = bufnr }) then
      vim.lsp.inline_completion.enable(false, { bufnr = bufnr })
      vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    end
  end
  return had
end

function M.status()
  return util.format_status(state.status)
end

local function feed(keys, remap)
  api.nvim_feedkeys(api.nvim_replace_termcodes(keys, true, false, true), remap and "m" or "n", false)
end

-- Run what `lhs` did before we mapped it (previous mapping or the builtin key).
local function fallthrough(lhs, prev)
  if not prev or vim.tbl_isempty(prev) then
    feed(lhs, false)
    return
  end
  local remap = prev.noremap ~= 1
  if prev.callback then
    local r = prev.callback()
    if prev.expr == 1 and type(r) == "string" then
      if prev.replace_keycodes == 1 or prev.replace_keycodes == nil then
        feed(r, remap)
      else
        api.nvim_feedkeys(r, remap and "m" or "n", false)
      end
    end
    return
  end
  local rhs = prev.rhs or ""
  if prev.expr == 1 then
    rhs = api.nvim_eval(rhs)
  end
  feed(rhs, remap)
end

-- What `lhs` did in `bufnr` before this plugin mapped it (remembered from the first attach, so that a
-- re-attach after :AigcCodeRestart does not chain to our own mapping).
local prev_maps = {}

local function maparg_in(bufnr, lhs)
  prev_maps[bufnr] = prev_maps[bufnr] or {}
  local known = prev_maps[bufnr][lhs]
  if known ~= nil then
    return known
  end
  local prev
  api.nvim_buf_call(bufnr, function()
    prev = vim.fn.maparg(lhs, "i", false, true)
  end)
  if type(prev) == "table" and type(prev.desc) == "string" and prev.desc:match("^aigc%-code:") then
    prev = {}
  end
  prev_maps[bufnr][lhs] = prev or {}
  return prev_maps[bufnr][lhs]
end

local function map_keys(bufnr)
  local km = M.config.keymaps or {}
  if km.accept and km.accept ~= "" then
    local prev = maparg_in(bufnr, km.accept)
    vim.keymap.set("i", km.accept, function()
      if M.accept() then
        return
      end
      if use_native() and vim.lsp.inline_completion.get() then
        return
      end
      fallthrough(km.accept, prev)
    end, { buffer = bufnr, silent = true, desc = "aigc-code: accept suggestion" })
  end
  if km.dismiss and km.dismiss ~= "" then
    local prev = maparg_in(bufnr, km.dismiss)
    vim.keymap.set("i", km.dismiss, function()
      if not M.dismiss() then
        fallthrough(km.dismiss, prev)
      end
    end, { buffer = bufnr, silent = true, desc = "aigc-code: dismiss suggestion" })
  end
end

local group

--- "starting" until the server says its model is loaded (aigcCode/status), then "ready" (or "error").
local function follow_backend(client, tries)
  tries = tries or 0
  if tries == 0 and state.status.kind ~= "disabled" then
    set_status("starting")
  end
  local ok = pcall(crequest, client, "aigcCode/status", vim.NIL, function(err, result)
    local backend = type(result) == "table" and result.backend or nil
    if err or type(backend) ~= "string" then
      if state.status.kind == "starting" then
        set_status("ready") -- a server without aigcCode/status
      end
    elseif (backend == "loading" or backend == "not loaded") and tries < 3600 then
      vim.defer_fn(function()
        follow_backend(client, tries + 1)
      end, 500)
    elseif backend:sub(1, 5) == "error" then
      set_status("error", { message = backend:gsub("^error:%s*", "") })
    elseif state.status.kind == "starting" then
      set_status("ready")
    end
  end)
  if not ok and state.status.kind == "starting" then
    set_status("ready")
  end
end

local function on_attach(client, bufnr)
  if state.attached[bufnr] then
    return
  end
  state.attached[bufnr] = true
  api.nvim_clear_autocmds({ group = group, buffer = bufnr }) -- from a previous client (restart)
  follow_backend(client)
  map_keys(bufnr)
  local native = use_native()
  if native and M.config.enabled and M.config.auto_trigger then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  end
  api.nvim_create_autocmd({ "TextChangedI", "CursorMovedI" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      if state.suggestion and current_suggestion() then
        return -- typed through the suggestion: keep it, no new request
      end
      clear_suggestion()
      if not native and M.config.enabled and M.config.auto_trigger then
        debounce()
      else
        cancel_pending()
      end
    end,
  })
  api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    buffer = bufnr,
    callback = function()
      if state.timer then
        state.timer:stop()
      end
      cancel_pending()
      clear_suggestion()
    end,
  })
  api.nvim_create_autocmd("BufDelete", {
    group = group,
    buffer = bufnr,
    callback = function()
      state.attached[bufnr] = nil
      prev_maps[bufnr] = nil
    end,
  })
  if M.config.on_attach then
    M.config.on_attach(client, bufnr)
  end
end

local function client_config(bufnr)
  local root = find_root(bufnr)
  local settings = server_settings()
  local cmd = M.server_cmd()
  return {
    name = NAME,
    cmd = cmd,
    cmd_env = M.config.cmd_env,
    root_dir = root,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
    init_options = { aigcCode = settings },
    settings = { aigcCode = settings },
    capabilities = capabilities(),
    flags = { debounce_text_changes = 0, allow_incremental_sync = true },
    on_attach = on_attach,
    on_exit = function(code, signal)
      vim.schedule(function()
        if code ~= 0 then
          set_status("error", { message = string.format("server exited (code %d, signal %d)", code, signal or 0) })
        else
          set_status("stopped")
        end
      end)
    end,
  }
end

--- Start (or reuse) the server for `bufnr` and attach it.
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  if vim.bo[bufnr].buftype ~= "" or api.nvim_buf_get_name(bufnr) == "" then
    return
  end
  local config = client_config(bufnr)
  if vim.fn.executable(config.cmd[1]) ~= 1 then
    set_status("error", { message = config.cmd[1] .. " not found" })
    notify(config.cmd[1] .. " is not executable; set server_path or cmd in setup()", vim.log.levels.ERROR)
    return
  end
  if vim.lsp.start then
    return vim.lsp.start(config, { bufnr = bufnr })
  end
  local id = state.clients[config.root_dir]
  if not id or not vim.lsp.get_client_by_id(id) then
    id = vim.lsp.start_client(config)
    if not id then
      set_status("error", { message = "could not start the server" })
      return
    end
    state.clients[config.root_dir] = id
  end
  vim.lsp.buf_attach_client(bufnr, id)
  return id
end

local function all_clients()
  if vim.lsp.get_clients then
    return vim.lsp.get_clients({ name = NAME })
  end
  return named(vim.lsp.get_active_clients())
end

--- Stop all aigc-code servers and start them again for the attached buffers.
function M.restart()
  local bufs = vim.tbl_keys(state.attached)
  for _, c in ipairs(all_clients()) do
    if util.has_011 then
      c:stop()
    else
      c.stop()
    end
  end
  state.clients = {}
  state.attached = {}
  vim.defer_fn(function()
    for _, b in ipairs(bufs) do
      if api.nvim_buf_is_valid(b) then
        M.attach(b)
      end
    end
  end, 500)
end

--- Send the current settings to running servers.
function M.push_settings()
  for _, c in ipairs(all_clients()) do
    cnotify(c, "workspace/didChangeConfiguration", { settings = { aigcCode = server_settings() } })
  end
end

function M.set_enabled(enabled)
  M.config.enabled = enabled
  if not enabled then
    M.dismiss()
    set_status("disabled")
  else
    set_status("ready")
  end
  if use_native() then
    for b in pairs(state.attached) do
      if api.nvim_buf_is_valid(b) then
        vim.lsp.inline_completion.enable(enabled and M.config.auto_trigger, { bufnr = b })
      end
    end
  end
end

--- Run `aigc-code serve ... --check` (loads the model / reaches the endpoint) and report the result.
function M.check()
  local cmd = M.check_cmd()
  local output = {}
  local collect = function(_, data)
    for _, l in ipairs(data or {}) do
      if l ~= "" then
        table.insert(output, l)
      end
    end
  end
  notify("checking: " .. table.concat(cmd, " "))
  local ok, job = pcall(vim.fn.jobstart, cmd, {
    env = M.config.cmd_env,
    stdout_buffered = true,
    stderr_buffered = true,
    on_stdout = collect,
    on_stderr = collect,
    on_exit = function(_, code)
      vim.schedule(function()
        local last = output[#output] or ""
        for _, l in ipairs(output) do
          if l:match("^ok:") or l:match("^error:") then
            last = l
          end
        end
        notify((code == 0 and "check passed: " or "check FAILED: ") .. last,
          code == 0 and vim.log.levels.INFO or vim.log.levels.ERROR)
      end)
    end,
  })
  if not ok or job <= 0 then
    notify("could not run " .. cmd[1], vim.log.levels.ERROR)
  end
end

local function open_log()
  local path = M.config.log_file
  if not path or vim.fn.filereadable(path) ~= 1 then
    path = vim.lsp.get_log_path()
  end
  vim.cmd("tabnew " .. vim.fn.fnameescape(path))
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  if opts and opts.filetypes then
    M.config.filetypes = opts.filetypes -- lists replace, not merge
  end
  if opts and opts.root_markers then
    M.config.root_markers = opts.root_markers
  end
  if opts and opts.cmd then
    M.config.cmd = opts.cmd
  end
  api.nvim_set_hl(0, "AigcCodeSuggestion", { link = "Comment", default = true })
  group = api.nvim_create_augroup("aigc_code", { clear = true })
  api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = M.config.filetypes,
    callback = function(args)
      M.attach(args.buf)
    end,
  })
  api.nvim_create_user_command("AigcCodeComplete", function()
    M.request({ manual = true })
  end, { desc = "aigc-code: request a suggestion at the cursor" })
  api.nvim_create_user_command("AigcCodeAccept", function()
    M.accept()
  end, { desc = "aigc-code: accept the suggestion" })
  api.nvim_create_user_command("AigcCodeDismiss", function()
    M.dismiss()
  end, { desc = "aigc-code: dismiss the suggestion" })
  api.nvim_create_user_command("AigcCodeEnable", function()
    M.set_enabled(true)
  end, {})
  api.nvim_create_user_command("AigcCodeDisable", function()
    M.set_enabled(false)
  end, {})
  api.nvim_create_user_command("AigcCodeToggle", function()
    M.set_enabled(not M.config.enabled)
  end, {})
  api.nvim_create_user_command("AigcCodeRestart", function()
    M.restart()
  end, { desc = "aigc-code: restart the server" })
  api.nvim_create_user_command("AigcCodeStatus", function()
    local client = client_for(api.nvim_get_current_buf())
    if not client then
      print(M.status() .. " (no server attached to this buffer)")
      return
    end
    -- the server's own view: backend (model loading / ready / error), settings, cache
    crequest(client, "aigcCode/status", vim.NIL, function(err, result)
      if err or type(result) ~= "table" then
        print(M.status())
        return
      end
      print(string.format("%s | backend: %s | documents: %s", M.status(), tostring(result.backend),
        tostring(result.documents)))
    end, api.nvim_get_current_buf())
  end, {})
  api.nvim_create_user_command("AigcCodeCheck", function()
    M.check()
  end, { desc = "aigc-code: run `aigc-code serve --check` with this configuration" })
  api.nvim_create_user_command("AigcCodeLog", open_log, { desc = "aigc-code: open the server log" })
  -- buffers that are already open
  for _, b in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(b) and vim.tbl_contains(M.config.filetypes, vim.bo[b].filetype) then
      M.attach(b)
    end
  end
  if not M.config.enabled then
    set_status("disabled")
  end
end

M._state = state
M._util = util
M._server_settings = server_settings

return M
