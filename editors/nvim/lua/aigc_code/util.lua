-- Pure helpers for aigc_code (no editor state): version shims, position encodings, response
-- normalisation and the ghost-text/edit computation. Unit-tested by tests/unit.lua.

local M = {}

local has = function(feature)
  return vim.fn.has(feature) == 1
end

M.has_011 = has("nvim-0.11")
M.has_010 = has("nvim-0.10")
M.has_08 = has("nvim-0.8")

M.uv = vim.uv or vim.loop

--- Byte length of the UTF-8 sequence starting with byte `b`.
local function utf8_len(b)
  if b < 0x80 then
    return 1
  elseif b >= 0xF0 then
    return 4
  elseif b >= 0xE0 then
    return 3
  elseif b >= 0xC0 then
    return 2
  end
  return 1 -- continuation byte: treat as one unit (invalid UTF-8)
end

--- Number of `encoding` code units in the first `byte_col` bytes of `line`.
--- encoding: "utf-8" | "utf-16" | "utf-32". Pure Lua so that it behaves the same on every release.
function M.units_from_byte(line, byte_col, encoding)
  byte_col = math.min(byte_col, #line)
  if encoding == "utf-8" then
    return byte_col
  end
  local units, i = 0, 1
  while i <= byte_col do
    local n = utf8_len(line:byte(i))
    if encoding == "utf-16" and n == 4 then
      units = units + 2
    else
      units = units + 1
    end
    i = i + n
  end
  return units
end

--- Byte column of the `units`-th `encoding` code unit of `line` (clamped to the line length).
function M.byte_from_units(line, units, encoding)
  if encoding == "utf-8" then
    return math.min(units, #line)
  end
  local count, i = 0, 1
  while i <= #line and count < units do
    local n = utf8_len(line:byte(i))
    count = count + ((encoding == "utf-16" and n == 4) and 2 or 1)
    i = i + n
  end
  return math.min(i - 1, #line)
end

local function is_pos(p)
  return type(p) == "table" and type(p.line) == "number" and type(p.character) == "number"
    and p.line >= 0 and p.character >= 0
end

local function cmp_pos(a, b)
  if a.line ~= b.line then
    return a.line - b.line
  end
  return a.character - b.character
end

local function is_range(r)
  return type(r) == "table" and is_pos(r.start) and is_pos(r["end"]) and cmp_pos(r.start, r["end"]) <= 0
end

--- Remove snippet syntax ($1, ${2:default}, ${3|a,b|}, \$) leaving the plain text.
function M.snippet_to_text(s)
  -- protect escaped characters first
  s = s:gsub("\\([%$}\\])", function(c)
    return "\1" .. string.byte(c) .. "\2"
  end)
  local prev
  repeat
    prev = s
    s = s:gsub("%${%d+:([^{}]*)}", "%1")
  until s == prev
  s = s:gsub("%${%d+|([^,|}]*)[^}]*|}", "%1")
  s = s:gsub("%${%d+}", "")
  s = s:gsub("%$%d+", "")
  s = s:gsub("\1(%d+)\2", function(n)
    return string.char(tonumber(n))
  end)
  return s
end

local function item_from(raw)
  if type(raw) == "string" then
    return raw ~= "" and { text = raw } or nil
  end
  if type(raw) ~= "table" then
    return nil
  end
  local text
  local it = raw.insertText
  if type(it) == "string" then
    text = it
  elseif type(it) == "table" and type(it.value) == "string" then
    text = it.kind == "snippet" and M.snippet_to_text(it.value) or it.value
  end
  if not text or text == "" then
    return nil
  end
  local item = { text = text }
  if raw.range ~= nil and raw.range ~= vim.NIL then
    if not is_range(raw.range) then
      return nil
    end
    item.range = raw.range
  end
  return item
end

--- `InlineCompletionList | InlineCompletionItem[] | nil` -> { {text=, range=?}, ... }
function M.normalize_inline(result)
  if type(result) ~= "table" then
    return {}
  end
  local raw = result
  if result.items ~= nil then
    raw = result.items
  end
  if type(raw) ~= "table" then
    return {}
  end
  local out = {}
  for _, r in ipairs(raw) do
    local item = item_from(r)
    if item then
      table.insert(out, item)
    end
  end
  return out
end

--- `CompletionList | CompletionItem[] | nil` -> inline items, best first (preselect, then sortText).
function M.completion_to_inline(result)
  if type(result) ~= "table" then
    return {}
  end
  local raw = result.items ~= nil and result.items or result
  if type(raw) ~= "table" then
    return {}
  end
  local default_range
  if type(result.itemDefaults) == "table" and type(result.itemDefaults.editRange) == "table" then
    local er = result.itemDefaults.editRange
    default_range = er.insert or er
  end
  local ranked = {}
  for i, item in ipairs(raw) do
    if type(item) == "table" then
      table.insert(ranked, { item = item, index = i })
    end
  end
  table.sort(ranked, function(a, b)
    local pa = a.item.preselect == true and 0 or 1
    local pb = b.item.preselect == true and 0 or 1
    if pa ~= pb then
      return pa < pb
    end
    local ka = a.item.sortText or a.item.label or ""
    local kb = b.item.sortText or b.item.label or ""
    if ka ~= kb then
      return ka < kb
    end
    return a.index < b.index
  end)
  local out = {}
  for _, r in ipairs(ranked) do
    local item = r.item
    local text, range
    local te = item.textEdit
    if type(te) == "table" and type(te.newText) == "string" then
      text = te.newText
      range = te.insert or te.range
    else
      text = item.textEditText or item.insertText or item.label
      range = default_range
    end
    if type(text) == "string" then
      local converted = item_from({
        insertText = item.insertTextFormat == 2 and { kind = "snippet", value = text } or text,
        range = range,
      })
      if converted then
        table.insert(out, converted)
      end
    end
  end
  return out
end

--- Work out what to show and what accepting does.
---
--- item: {text, range?} with LSP positions in `encoding`; get_line(row) returns the buffer line (0-based
--- row); row/col: the insertion point (0-based row, byte col).
--- Returns nil when the item cannot be shown at this position (range elsewhere, text does not extend
--- what is already typed), else a table:
---   { sr, sc, er, ec  -- byte range the accepted text replaces
---     text            -- the full text that replaces it
---     lines           -- ghost text: lines[1] goes at the cursor, the rest below }
function M.plan(item, get_line, row, col, encoding)
  local cur_line = get_line(row) or ""
  local sr, sc, er, ec = row, col, row, col
  if item.range then
    local s, e = item.range.start, item.range["end"]
    sr = s.line
    er = e.line
    local sline = sr == row and cur_line or get_line(sr)
    local eline = er == row and cur_line or get_line(er)
    if not sline or not eline then
      return nil
    end
    sc = M.byte_from_units(sline, s.character, encoding)
    ec = M.byte_from_units(eline, e.character, encoding)
    -- the range must contain the insertion point
    if sr > row or (sr == row and sc > col) or er < row or (er == row and ec < col) then
      return nil
    end
  end
  -- Text between the range start and the cursor is already in the buffer: it has to be a prefix of
  -- the suggestion, and only the rest is ghost text.
  local typed
  if sr == row then
    typed = cur_line:sub(sc + 1, col)
  else
    local parts = { (get_line(sr) or ""):sub(sc + 1) }
    for r = sr + 1, row - 1 do
      table.insert(parts, get_line(r) or "")
    end
    table.insert(parts, cur_line:sub(1, col))
    typed = table.concat(parts, "\n")
  end
  if item.text:sub(1, #typed) ~= typed then
    return nil
  end
  local rest = item.text:sub(#typed + 1)
  if rest == "" then
    return nil
  end
  -- Replaced text after the cursor that the suggestion re-inserts unchanged (e.g. a closing paren
  -- already typed) is hidden from the ghost text by the replacement itself; keep it simple: show rest.
  return {
    sr = sr,
    sc = sc,
    er = er,
    ec = ec,
    text = item.text,
    lines = vim.split(rest, "\n", { plain = true }),
    tail = (er == row) and (ec - col) or nil, -- bytes after the cursor that the edit replaces
  }
end

--- Cursor position (0-based row, byte col) after inserting `text` at (sr, sc).
function M.end_of_insert(sr, sc, text)
  local lines = vim.split(text, "\n", { plain = true })
  if #lines == 1 then
    return sr, sc + #lines[1]
  end
  return sr + #lines - 1, #lines[#lines]
end

--- Expand tabs for display in virtual text.
function M.display(s, tabstop)
  return (s:gsub("\t", string.rep(" ", tabstop or 8)))
end

--- Format the status line fragment.
function M.format_status(state)
  local s = "aigc: " .. (state.kind or "idle")
  if state.kind == "error" and state.message then
    s = s .. " (" .. state.message .. ")"
  end
  if state.latency_ms then
    s = s .. string.format(" %dms", state.latency_ms)
  end
  return s
end

return M
