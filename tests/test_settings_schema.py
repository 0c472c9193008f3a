"""Settings are declared once (aigc_code/settings.py): the docs page is generated from the schema,
and the VS Code extension's package.json and the Neovim plugin are checked against it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from aigc_code.cli import app
from aigc_code.settings import BY_CAMEL, FIELDS, SECTION, Settings, coerce, json_property, markdown_table, merge

REPO = Path(__file__).resolve().parents[1]
# Extension-only settings (how the editor starts and shows the server), not server settings.
EXTENSION_ONLY = {
    "enable",
    "server.path",
    "server.args",
    "server.logFile",
    "server.env",
    "suggestWidget",
    "serverSettings",
    "trace.server",
}
_JSON = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def vscode_properties() -> dict[str, dict]:
    conf = json.loads((REPO / "editors/vscode/package.json").read_text())["contributes"]["configuration"]
    blocks = conf if isinstance(conf, list) else [conf]
    return {k[len(SECTION) + 1 :]: v for b in blocks for k, v in b["properties"].items()}


def test_docs_page_is_generated_from_the_schema():
    page = (REPO / "docs/settings.md").read_text()
    assert markdown_table() in page, "docs/settings.md is stale: python -m aigc_code.settings --markdown"


def test_every_default_passes_its_own_validation():
    for name, f in FIELDS.items():
        if f.default is not None:
            assert coerce(name, list(f.default) if isinstance(f.default, tuple) else f.default) == f.default, name
    assert merge(Settings(), {"maxNewTokens": 0})[1], "out-of-range values are reported"


def test_package_json_agrees_with_the_schema():
    props = vscode_properties()
    unknown = set(props) - set(BY_CAMEL) - EXTENSION_ONLY
    assert not unknown, f"package.json declares settings the server does not know: {unknown}"
    for key, prop in props.items():
        if key in EXTENSION_ONLY:
            continue
        schema = json_property(BY_CAMEL[key])
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        want = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert set(types) - {"null"} <= set(want), (key, types, want)
        if "enum" in prop and "enum" in schema:
            assert set(prop["enum"]) - {""} <= set(schema["enum"]), key
        # the editor may narrow a range, never widen it past what the server accepts
        if "minimum" in prop:
            assert prop["minimum"] >= schema["minimum"], key
        if "maximum" in prop:
            assert prop["maximum"] <= schema["maximum"], key
        default = prop.get("default")
        if default not in (None, "", []) and key != "enabledLanguages":
            assert isinstance(default, _JSON[types[0]]), key
            assert coerce(BY_CAMEL[key], default) is not None, key
        # remote windows ignore machine(-overridable) settings in User settings (the spawn ENOENT bug)
        assert prop.get("scope", "window") not in ("machine", "machine-overridable"), key


def test_neovim_plugin_sends_only_known_settings():
    lua = (REPO / "editors/nvim/lua/aigc_code/init.lua").read_text()
    table = re.search(r"local BACKEND_KEYS = \{(.*?)\n\}", lua, re.S)
    assert table, "BACKEND_KEYS not found in the Neovim plugin"
    rows = re.findall(r'\{ "\w+", "(\w+)", "(--[\w-]+)" \}', table.group(1))
    assert len(rows) == table.group(1).count("{"), table.group(1)
    keys, flags = {key for key, _ in rows}, {flag for _, flag in rows}
    assert keys <= set(BY_CAMEL), keys - set(BY_CAMEL)
    # `serve --check` is given the same values as flags: each must be one of serve's options
    serve = typer.main.get_command(app).commands["serve"]
    options = {opt for param in serve.params for opt in param.opts}
    assert flags <= options, flags - options
