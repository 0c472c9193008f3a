"""Repository-aware completion end to end: the real server over stdio with a workspace folder of
real files on disk. A line that exists only in another workspace file is completed; the index
follows edits and files that appear on disk; it never opens a file outside the workspace folder
(every `open` in the server process is recorded by an audit hook and checked)."""

from __future__ import annotations

import asyncio
import sys
import textwrap

import pytest
import pytest_asyncio
from lspkit import plain
from lsprotocol import types as T
from pytest_lsp import make_test_lsp_client

pytestmark = pytest.mark.asyncio(loop_scope="module")

BASE = {"maxNewTokens": 16, "temperature": 0.0}

# Starts the real server with an audit hook that appends every path the process opens to a file.
LAUNCH = textwrap.dedent("""
    import os, sys
    log = open(os.environ["AIGC_OPEN_LOG"], "a", buffering=1)
    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            log.write(os.fsdecode(args[0]) + "\\n")
    sys.addaudithook(hook)
    from aigc_code.server.cli import app
    sys.argv = ["aigc-code", "serve", *sys.argv[1:]]
    app()
""")

HELPERS = textwrap.dedent("""\
    import json


    def load_settings(path):
        with open(path) as f:
            settings = json.load(f)
        settings.setdefault("timeout_seconds", 30)
        return settings
""")

BUFFER = "import json\n\n\ndef read_config(path):\n    with open(path) as f:\n        settings = json.load(f)\n    "

SECRET = "launch_codes = 'outside-the-workspace'\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("ws")
    root = base / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "helpers.py").write_text(HELPERS)
    (root / "pkg" / "__init__.py").write_text("")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text(SECRET)
    (root / "pkg" / "link.py").symlink_to(outside / "secret.py")  # points outside: never read
    return root, outside, base / "opened.log"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(workspace, tiny_model):
    root, _, opened = workspace
    c = make_test_lsp_client()
    c.registrations = []

    @c.feature(T.CLIENT_REGISTER_CAPABILITY)
    def _register(params: T.RegistrationParams):
        c.registrations.extend(r.method for r in params.registrations)

    import os

    os.environ["AIGC_OPEN_LOG"] = str(opened)
    await c.start_io(sys.executable, "-c", LAUNCH, "--model", str(tiny_model), "--log-level", "INFO")
    caps = T.ClientCapabilities(
        workspace=T.WorkspaceClientCapabilities(
            did_change_watched_files=T.DidChangeWatchedFilesClientCapabilities(dynamic_registration=True)
        )
    )
    await c.initialize_session(
        T.InitializeParams(
            capabilities=caps,
            root_uri=root.as_uri(),
            workspace_folders=[T.WorkspaceFolder(uri=root.as_uri(), name="project")],
            initialization_options={"aigcCode": dict(BASE)},
        )
    )
    await wait_indexed(c)
    yield c
    try:
        await asyncio.wait_for(c.shutdown_session(), 10)
    except Exception:
        c._server.kill()
    await c.stop()


async def status(c) -> dict:
    return plain(await c.protocol.send_request_async("aigcCode/status", None))


async def wait_indexed(c, timeout: float = 60) -> dict:
    for _ in range(int(timeout * 10)):
        st = await status(c)
        if str(st["workspace"]["status"]).startswith("ready"):
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"workspace index not ready: {st['workspace']}")


async def suggest(c, uri: str, text: str, language: str = "python", version: int = 1) -> list[str]:
    c.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, language, version, text)))
    lines = text.split("\n")  # the cursor goes at the end of the text
    pos = T.Position(len(lines) - 1, len(lines[-1]))
    result = await c.text_document_inline_completion_async(
        T.InlineCompletionParams(
            context=T.InlineCompletionContext(trigger_kind=T.InlineCompletionTriggerKind.Invoked),
            text_document=T.TextDocumentIdentifier(uri),
            position=pos,
        )
    )
    c.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri)))
    items = result.items if hasattr(result, "items") else result
    return [i.insert_text if isinstance(i.insert_text, str) else i.insert_text.value for i in items]


async def test_line_from_another_workspace_file(client, workspace):
    root, _, _ = workspace
    st = await status(client)
    assert st["workspace"]["files"] == 1  # helpers.py; the empty __init__.py and the outside link skipped
    skipped = st["workspace"]["skipped"]  # pygls renames the key "outside-workspace" (not an identifier)
    assert skipped["empty"] == 1 and sum(skipped.values()) == 2, skipped
    assert T.WORKSPACE_DID_CHANGE_WATCHED_FILES in client.registrations
    items = await suggest(client, (root / "pkg" / "config.py").as_uri(), BUFFER)
    assert items and items[0].startswith('settings.setdefault("timeout_seconds", 30)'), items


async def test_never_reads_outside_the_workspace(client, workspace):
    root, outside, opened = workspace
    items = await suggest(client, (root / "pkg" / "x.py").as_uri(), "launch_codes = ")
    assert all("outside-the-workspace" not in i for i in items)
    paths = opened.read_text().splitlines()
    assert paths, "the audit hook recorded nothing"
    assert not [p for p in paths if p.startswith(str(outside))], "a file outside the workspace was opened"
    assert not [p for p in paths if p.endswith("link.py")], "the symlink to outside was followed"


async def test_follows_edits_of_open_buffers(client, workspace):
    root, _, _ = workspace
    other = (root / "pkg" / "draft.py").as_uri()
    text = "def area(w, h):\n    product_of_sides = w * h * 1.5\n    return product_of_sides\n"
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(other, "python", 1, "")))
    client.text_document_did_change(
        T.DidChangeTextDocumentParams(
            T.VersionedTextDocumentIdentifier(uri=other, version=2),
            [T.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )
    await asyncio.sleep(0.2)
    items = await suggest(client, (root / "pkg" / "shapes.py").as_uri(), "def area(w, h):\n    ")
    assert items and items[0].startswith("product_of_sides = w * h * 1.5"), items


async def test_follows_files_that_appear_on_disk(client, workspace):
    root, _, _ = workspace
    new = root / "pkg" / "fresh.py"
    new.write_text("def greet(name):\n    banner = f'hello {name}, welcome aboard'\n    return banner\n")
    client.workspace_did_change_watched_files(
        T.DidChangeWatchedFilesParams(changes=[T.FileEvent(uri=new.as_uri(), type=T.FileChangeType.Created)])
    )
    await asyncio.sleep(0.3)
    items = await suggest(client, (root / "pkg" / "other.py").as_uri(), "def greet(name):\n    ")
    assert items and items[0].startswith("banner = f'hello {name}, welcome aboard'"), items
