-- End-to-end test: real `nvim --headless` + real `aigc-code serve`. Run by tests/run.sh.
--
-- Environment: AIGC_CODE_BIN (server executable), AIGC_TEST_MODEL (model dir, optional),
-- AIGC_TEST_LOG (server log file), AIGC_TEST_DIR (scratch dir), AIGC_TEST_TIMEOUT_MS.
--
-- The test runs as a coroutine that yields to the main loop between steps, so that fed keys are
-- processed for real (Insert mode, mappings, autocommands, the plugin's debounce timer).

local api = vim.api
local bin = assert(os.getenv("AIGC_CODE_BIN"), "AIGC_CODE_BIN not set")
local model = os.getenv("AIGC_TEST_MODEL")
local logfile = os.getenv("AIGC_TEST_LOG")
local dir = assert(os.getenv("AIGC_TEST_DIR"), "AIGC_TEST_DIR not set")
local timeout = tonumber(os.getenv("AIGC_TEST_TIMEOUT_MS") or "") or 180000

local passed, failed = 0, 0
local co

local function out(msg)
  io.stdout:write(msg .. "\n")
  io.stdout:flush()
end

local function finish()
  pcall(function()
    for _, c in ipairs((vim.lsp.get_clients or vim.lsp.get_active_clients)()) do
      if vim.fn.has("nvim-0.11") == 1 then
        c:stop(true)
      else
        c.stop(true)
      end
    end
  end)
  out(string.format("e2e: %d passed, %d failed", passed, failed))
  vim.cmd(failed == 0 and passed > 0 and "qall!" or "cquit 1")
end

local function resume()
  local ok, err = coroutine.resume(co)
  if not ok then
    failed = failed + 1
    out("ERROR " .. tostring(err) .. "\n" .. debug.traceback(co))
    finish()
  elseif coroutine.status(co) == "dead" then
    finish()
  end
end

local function sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end

local function wait_for(what, cond, ms)
  local waited = 0
  ms = ms or timeout
  while true do
    local v = cond()
    if v then
      return v
    end
    if waited >= ms then
      error("timed out after " .. ms .. " ms waiting for " .. what, 2)
    end
    sleep(50)
    waited = waited + 50
  end
end

--- Feed keys as if typed (mappings apply) and let the main loop process them.
local function feed(keys)
  api.nvim_feedkeys(api.nvim_replace_termcodes(keys, true, false, true), "mt", false)
  sleep(20)
  wait_for("typeahead to drain", function()
    return vim.fn.getchar(1) == 0
  end, 5000)
  sleep(20)
end

local function check(name, cond, detail)
  if cond then
    passed = passed + 1
    out("ok   " .. name)
  else
    failed = failed + 1
    out("FAIL " .. name .. (detail and ("\n     " .. detail) or ""))
  end
end

local function lines(bufnr)
  return api.nvim_buf_get_lines(bufnr or 0, 0, -1, true)
end

--- The buffer `before` after applying the server's answer the way LSP defines it, computed with
--- Neovim's own vim.lsp.util.apply_text_edits on a scratch buffer (independent of the plugin).
local function expected_after(before, response, position, encoding)
  local result = response.result
  local items = type(result) == "table" and (result.items or result) or {}
  local item
  for _, it in ipairs(items) do
    local text = type(it.insertText) == "table" and it.insertText.value or it.insertText
    local range = it.range
    if response.method == "textDocument/completion" and type(it.textEdit) == "table" then
      text, range = it.textEdit.newText, it.textEdit.range or it.textEdit.insert
    end
    if type(text) == "string" and text ~= "" then
      item = { text = text, range = range }
      break
    end
  end
  assert(item, "server returned no non-empty item: " .. vim.inspect(result))
  local scratch = api.nvim_create_buf(false, true)
  api.nvim_buf_set_lines(scratch, 0, -1, true, before)
  local range = item.range or { start = position, ["end"] = position }
  vim.lsp.util.apply_text_edits({ { range = range, newText = item.text } }, scratch, encoding)
  local after = api.nvim_buf_get_lines(scratch, 0, -1, true)
  api.nvim_buf_delete(scratch, { force = true })
  return after, item.text
end

--- Items in a response (inline list or array), non-empty texts only.
local function count_items(resp)
  local r = resp and resp.result
  local n = 0
  for _, it in ipairs(type(r) == "table" and (r.items or r) or {}) do
    local t = type(it.insertText) == "table" and it.insertText.value or it.insertText
    if type(t) == "string" and t ~= "" then
      n = n + 1
    end
  end
  return n
end

-- The model in the tests is random. What it writes survives the server's syntax check only inside a
-- comment, and even there it may start with a newline (then the server has nothing to offer). So the
-- completions are requested at the end of comments, trying other comment texts if one gets nothing,
-- and after a few greedy tries, sampling (temperature 1 with a fixed seed, sent with
-- workspace/didChangeConfiguration).
local COMMENTS = {
  "The area grows with the square of ",
  "radius is ",
  "See also: ",
  "TODO: handle ",
  "Note that ",
  "Returns the ",
  "For example, ",
  "Uses ",
}

local ATTEMPTS = 16
local GREEDY_ATTEMPTS = 4

local function attempt_settings(aigc, i)
  if i > GREEDY_ATTEMPTS then
    aigc.config.settings = vim.tbl_extend("force", aigc.config.settings or {}, { temperature = 1.0, seed = i })
    aigc.push_settings()
  end
  return COMMENTS[(i - 1) % #COMMENTS + 1]
end

local function show_diff(a, b)
  return "expected:\n" .. table.concat(a, "\n") .. "\n     actual:\n" .. table.concat(b, "\n")
end

local function main()
  local aigc = require("aigc_code")
  local responses = {}
  aigc._on_response = function(method, params, result, err)
    table.insert(responses, { method = method, params = params, result = result, err = err })
  end

  local cmd = { bin, "serve" }
  if model and model ~= "" then
    vim.list_extend(cmd, { "--model", model })
  end
  if logfile and logfile ~= "" then
    vim.list_extend(cmd, { "--log-file", logfile })
  end
  aigc.setup({ cmd = cmd, debounce_ms = 50, native = false })

  local path = dir .. "/project/sample.py"
  vim.fn.mkdir(dir .. "/project/.git", "p") -- fixed project root, hence fixed paths in the prompt
  vim.fn.writefile({
    "import math",
    "",
    "",
    "def circle_area(radius):",
    '    """Area of a circle."""',
    "    # The area grows with the square of ",
    "    return math.pi * radius ** 2",
    "",
    "",
    "def main():",
    "    print(circle_area(2.0))",
  }, path)
  vim.cmd("edit " .. vim.fn.fnameescape(path))
  local bufnr = api.nvim_get_current_buf()
  check("filetype detected", vim.bo.filetype == "python", vim.bo.filetype)

  local client = wait_for("the aigc-code server to initialize", function()
    for _, c in ipairs((vim.lsp.get_clients or vim.lsp.get_active_clients)()) do
      if c.name == "aigc_code" and c.initialized ~= false and c.server_capabilities
        and next(c.server_capabilities) ~= nil and vim.lsp.buf_is_attached(bufnr, c.id) then
        return c
      end
    end
  end)
  local caps = client.server_capabilities
  check("server advertises inlineCompletionProvider", caps.inlineCompletionProvider ~= nil,
    vim.inspect(caps))
  check("server advertises completionProvider", caps.completionProvider ~= nil)
  local encoding = client.offset_encoding or "utf-16"
  check("positions are utf-16", encoding == "utf-16", encoding)

  -- The status says "ready" only once the server reports the model loaded (aigcCode/status).
  wait_for("status ready", function()
    return aigc.status():match("^aigc: ready") ~= nil
  end)
  local backend
  local rq = client.request and (vim.fn.has("nvim-0.11") == 1 and function(...) return client:request(...) end or client.request)
  rq("aigcCode/status", vim.NIL, function(_, result)
    backend = result and result.backend or "?"
  end)
  wait_for("aigcCode/status", function()
    return backend ~= nil
  end)
  check("status ready only after the model loaded", backend ~= "loading" and backend ~= "not loaded", backend)

  -- 1. Manual trigger from Normal mode (:AigcCodeComplete), accept with :AigcCodeAccept -----------
  local line6, before, resp
  for i = 1, ATTEMPTS do
    local comment = attempt_settings(aigc, i)
    line6 = "    # " .. comment
    api.nvim_buf_set_lines(0, 5, 6, true, { line6 })
    api.nvim_win_set_cursor(0, { 6, #line6 - 1 }) -- on the last character; insertion point = end of line
    before = lines()
    responses = {}
    vim.cmd("AigcCodeComplete")
    wait_for("a response to :AigcCodeComplete", function()
      return #responses > 0
    end)
    resp = responses[#responses]
    if resp.err or count_items(resp) > 0 then
      break
    end
    out("     no suggestion after " .. vim.inspect(line6) .. "; trying again")
  end
  check("manual request succeeded", resp.err == nil, vim.inspect(resp.err))
  check("manual request used textDocument/inlineCompletion", resp.method == "textDocument/inlineCompletion")
  check("manual request position is end of line 6",
    resp.params.position.line == 5 and resp.params.position.character == #line6, vim.inspect(resp.params.position))
  local expected, text = expected_after(before, resp, resp.params.position, encoding)
  out("     suggestion: " .. vim.inspect(text))
  check("suggestion is displayed", aigc.has_suggestion())
  local marks = api.nvim_buf_get_extmarks(0, api.nvim_create_namespace("aigc_code"), 0, -1, { details = true })
  check("ghost text extmark present", #marks == 1 and (marks[1][4].virt_text or marks[1][4].virt_lines) ~= nil,
    vim.inspect(marks))
  check("buffer unchanged while suggesting", vim.deep_equal(lines(), before))
  vim.cmd("AigcCodeAccept")
  check("accepted text is non-empty", #text > 0)
  check("buffer = before + the server's text (manual)", vim.deep_equal(lines(), expected),
    show_diff(expected, lines()))
  check("extmark cleared after accept",
    #api.nvim_buf_get_extmarks(0, api.nvim_create_namespace("aigc_code"), 0, -1, {}) == 0)

  -- 2. Automatic trigger while typing in Insert mode, accept with <Tab> ------------------------------
  api.nvim_buf_set_lines(0, 0, -1, true, before)
  check("buffer restored", vim.deep_equal(lines(), before))
  api.nvim_win_set_cursor(0, { 11, 0 })
  feed("o")
  check("in insert mode", api.nvim_get_mode().mode == "i", api.nvim_get_mode().mode)
  local shown_auto = false
  for i = 1, ATTEMPTS do
    local comment = COMMENTS[(i - 1) % #COMMENTS + 1]
    if i > 1 and i > GREEDY_ATTEMPTS then
      attempt_settings(aigc, i + 100)
    end
    responses = {}
    if i > 1 then
      feed("<C-u>") -- clear the typed comment (stays in Insert mode)
    end
    feed("# " .. comment)
    -- a suggestion, or the (empty) answer for the final cursor position
    wait_for("an automatic suggestion while typing", function()
      if aigc.has_suggestion() then
        return true
      end
      local last = responses[#responses]
      local c = api.nvim_win_get_cursor(0)
      return last and aigc._state.pending == nil and last.params.position.line == c[1] - 1
        and last.params.position.character == c[2]
    end)
    if aigc.has_suggestion() then
      shown_auto = true
      break
    end
    out("     no automatic suggestion after " .. vim.inspect(comment) .. "; trying again")
  end
  check("automatic suggestion shown while typing", shown_auto)
  if not shown_auto then
    error("no automatic suggestion for any of the comments")
  end
  resp = responses[#responses]
  check("automatic request used triggerKind Automatic", resp.params.context.triggerKind == 2)
  local cur = api.nvim_win_get_cursor(0)
  check("automatic request at the cursor", resp.params.position.line == cur[1] - 1
    and resp.params.position.character == cur[2], vim.inspect({ resp.params.position, cur }))
  before = lines()
  expected, text = expected_after(before, resp, resp.params.position, encoding)
  out("     suggestion: " .. vim.inspect(text))
  aigc._on_response = nil -- later automatic requests are irrelevant
  feed("<Tab>")
  check("<Tab> accepted: buffer = before + the server's text", vim.deep_equal(lines(), expected),
    show_diff(expected, lines()))
  check("still in insert mode after <Tab>", api.nvim_get_mode().mode == "i")
  local first = (resp.result.items or resp.result)[1]
  local start = first.range and first.range.start or resp.params.position
  local start_col = aigc._util.byte_from_units(before[start.line + 1], start.character, encoding)
  local exp_row, exp_col = aigc._util.end_of_insert(start.line, start_col, text)
  cur = api.nvim_win_get_cursor(0)
  check("cursor at the end of the inserted text", cur[1] - 1 == exp_row and cur[2] == exp_col,
    vim.inspect({ cur = cur, expected = { exp_row + 1, exp_col }, range = first.range }))

  -- 3. <C-]> dismisses; <Tab> without a suggestion inserts a tab ---------------------------------------
  feed("<CR># and then the ")
  local shown = pcall(wait_for, "another suggestion", function()
    return aigc.has_suggestion()
  end, 30000)
  if shown then
    local b = lines()
    feed("<C-]>")
    check("<C-]> dismissed the suggestion", not aigc.has_suggestion())
    check("<C-]> left the buffer unchanged", vim.deep_equal(lines(), b))
  else
    out("skip <C-]> check: no second suggestion (server returned none)")
  end
  aigc.set_enabled(false)
  local row = api.nvim_win_get_cursor(0)[1]
  local line_before = api.nvim_buf_get_lines(0, row - 1, row, true)[1]
  feed("<Tab>")
  local line_after = api.nvim_buf_get_lines(0, row - 1, row, true)[1]
  check("<Tab> falls through to normal Tab without a suggestion",
    line_after ~= line_before and line_after:match("^" .. vim.pesc(line_before) .. "%s+$") ~= nil,
    vim.inspect({ line_before, line_after }))
  feed("<Esc>")
  aigc.set_enabled(true)

  -- 4. :AigcCodeRestart: a new server attaches, completions work again ----------------------------
  local old_id = client.id
  vim.cmd("AigcCodeRestart")
  local new_client = wait_for("the restarted server", function()
    for _, c in ipairs((vim.lsp.get_clients or vim.lsp.get_active_clients)()) do
      if c.name == "aigc_code" and c.id ~= old_id and c.server_capabilities
        and next(c.server_capabilities) ~= nil and vim.lsp.buf_is_attached(bufnr, c.id) then
        return c
      end
    end
  end)
  check("restart attached a new client", new_client.id ~= old_id)
  api.nvim_win_set_cursor(0, { 6, #line6 - 1 })
  aigc._on_response = function(method, params, result, err)
    table.insert(responses, { method = method, params = params, result = result, err = err })
  end
  responses = {}
  vim.cmd("AigcCodeComplete")
  wait_for("a response after restart", function()
    return #responses > 0
  end)
  check("suggestion after restart", aigc.has_suggestion())
  before = lines()
  expected = expected_after(before, responses[#responses], responses[#responses].params.position, encoding)
  feed("A<Tab>")
  check("<Tab> after restart inserts the suggestion once", vim.deep_equal(lines(), expected),
    show_diff(expected, lines()))
  feed("<Esc>")

  check("status line text", aigc.status():match("^aigc: ") ~= nil, aigc.status())
  vim.v.errmsg = ""
  local ok_status, status_err = pcall(vim.cmd, "silent AigcCodeStatus")
  sleep(300)
  check(":AigcCodeStatus runs", ok_status and vim.v.errmsg == "", tostring(status_err) .. vim.v.errmsg)
end

co = coroutine.create(main)
vim.schedule(resume)
