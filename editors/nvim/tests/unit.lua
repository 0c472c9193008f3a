-- Pure-function tests for lua/aigc_code/util.lua (no server). Run by tests/run.sh.
local util = require("aigc_code.util")

local failures, count = 0, 0

local function eq(a, b, what)
  count = count + 1
  if not vim.deep_equal(a, b) then
    failures = failures + 1
    io.stdout:write(string.format("FAIL %s\n  expected: %s\n  actual:   %s\n", what, vim.inspect(b), vim.inspect(a)))
  end
end

-- position encodings: 'aé😀b' = a(1 byte) é(2 bytes) 😀(4 bytes, 2 UTF-16 units) b
local s = "aé😀b"
eq(util.units_from_byte(s, 0, "utf-16"), 0, "utf16 0")
eq(util.units_from_byte(s, 1, "utf-16"), 1, "utf16 after a")
eq(util.units_from_byte(s, 3, "utf-16"), 2, "utf16 after é")
eq(util.units_from_byte(s, 7, "utf-16"), 4, "utf16 after emoji")
eq(util.units_from_byte(s, 8, "utf-16"), 5, "utf16 end")
eq(util.units_from_byte(s, 7, "utf-32"), 3, "utf32 after emoji")
eq(util.units_from_byte(s, 7, "utf-8"), 7, "utf8 identity")
eq(util.units_from_byte(s, 99, "utf-16"), 5, "utf16 clamps")
eq(util.byte_from_units(s, 4, "utf-16"), 7, "bytes from utf16")
eq(util.byte_from_units(s, 2, "utf-16"), 3, "bytes from utf16 after é")
eq(util.byte_from_units(s, 3, "utf-32"), 7, "bytes from utf32")
eq(util.byte_from_units(s, 50, "utf-16"), 8, "bytes clamp")
eq(util.byte_from_units("", 3, "utf-16"), 0, "empty line")

-- snippets
eq(util.snippet_to_text("foo(${1:x}, $2)$0"), "foo(x, )", "snippet placeholders")
eq(util.snippet_to_text("a${1:b${2:c}}d"), "abcd", "nested snippet")
eq(util.snippet_to_text("cost \\$5"), "cost $5", "escaped dollar")

-- inline response normalisation
eq(util.normalize_inline(nil), {}, "nil result")
eq(util.normalize_inline(vim.NIL), {}, "null result")
eq(util.normalize_inline({ items = {} }), {}, "empty list")
eq(util.normalize_inline({ items = { { insertText = "x" }, { insertText = "" }, { foo = 1 } } }),
  { { text = "x" } }, "list drops empty")
eq(util.normalize_inline({ { insertText = "y", range = { start = { line = 1, character = 0 }, ["end"] = { line = 1, character = 2 } } } }),
  { { text = "y", range = { start = { line = 1, character = 0 }, ["end"] = { line = 1, character = 2 } } } }, "array with range")
eq(util.normalize_inline({ { insertText = "y", range = { start = { line = 2, character = 0 }, ["end"] = { line = 1, character = 2 } } } }),
  {}, "inverted range dropped")
eq(util.normalize_inline({ items = { { insertText = { kind = "snippet", value = "f(${1:a})" } } } }),
  { { text = "f(a)" } }, "snippet StringValue")

-- completion fallback
local r = function(l1, c1, l2, c2)
  return { start = { line = l1, character = c1 }, ["end"] = { line = l2, character = c2 } }
end
eq(util.completion_to_inline({ isIncomplete = true, items = {
  { label = "b", sortText = "1" },
  { label = "a", sortText = "0", preselect = true, textEdit = { range = r(0, 4, 0, 6), newText = "return x" } },
} }), { { text = "return x", range = r(0, 4, 0, 6) }, { text = "b" } }, "completion order and textEdit")
eq(util.completion_to_inline({ { label = "l", textEdit = { insert = r(0, 1, 0, 1), replace = r(0, 1, 0, 3), newText = "n" } } }),
  { { text = "n", range = r(0, 1, 0, 1) } }, "InsertReplaceEdit uses insert")
eq(util.completion_to_inline({ { label = "s", insertText = "g($1)", insertTextFormat = 2 } }), { { text = "g()" } }, "snippet completion")

-- planning the ghost text / edit
local lines = { "def f(x):", "    retu", "" }
local get = function(row) return lines[row + 1] end
local p = util.plan({ text = "rn x" }, get, 1, 8, "utf-16")
eq({ p.sr, p.sc, p.er, p.ec, p.lines }, { 1, 8, 1, 8, { "rn x" } }, "plan without range")
p = util.plan({ text = "return x\nprint(x)", range = r(1, 4, 1, 8) }, get, 1, 8, "utf-16")
eq({ p.sr, p.sc, p.er, p.ec, p.lines }, { 1, 4, 1, 8, { "rn x", "print(x)" } }, "plan with range, multi-line")
eq(util.plan({ text = "pass", range = r(1, 4, 1, 8) }, get, 1, 8, "utf-16"), nil, "typed text not a prefix")
eq(util.plan({ text = "retu", range = r(1, 4, 1, 8) }, get, 1, 8, "utf-16"), nil, "nothing left to show")
eq(util.plan({ text = "x", range = r(0, 0, 0, 1) }, get, 1, 8, "utf-16"), nil, "range elsewhere")
lines = { "s = 'é' + f", "" }
p = util.plan({ text = "f(1)", range = r(0, 10, 0, 11) }, get, 0, 12, "utf-16")
eq({ p.sc, p.ec, p.lines }, { 11, 12, { "(1)" } }, "utf-16 range on a line with é")
lines = { "call()", "" }
p = util.plan({ text = "(a)", range = r(0, 4, 0, 6) }, get, 0, 5, "utf-16")
eq({ p.sc, p.ec, p.tail, p.lines }, { 4, 6, 1, { "a)" } }, "range past the cursor")

eq({ util.end_of_insert(3, 4, "ab") }, { 3, 6 }, "end of single-line insert")
eq({ util.end_of_insert(3, 4, "ab\ncde") }, { 4, 3 }, "end of multi-line insert")
eq(util.display("\tx", 4), "    x", "tabs expanded")
eq(util.format_status({ kind = "ready", latency_ms = 42 }), "aigc: ready 42ms", "status")
eq(util.format_status({ kind = "error", message = "boom" }), "aigc: error (boom)", "status error")

-- the config's shorthands (model, fim_format, ...) become server settings; `settings` wins over them
local aigc = require("aigc_code")
local saved = aigc.config
aigc.config = { model = "m", fim_format = "f", device = "cpu", settings = { backend = "openai", model = "x" } }
eq(aigc._server_settings(), { model = "x", backend = "openai", fimFormat = "f", device = "cpu" }, "server settings")
aigc.config = saved

io.stdout:write(string.format("unit: %d passed, %d failed\n", count - failures, failures))
return failures
