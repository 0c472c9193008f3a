"""A huge document (2.4 MB, 400,000 lines) through the real server: it is answered, and the
server's memory stays bounded (no tree-sitter tree for it; completions see a window of text)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from lsprotocol import types as T
from pytest_lsp import make_test_lsp_client


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's memory")
def test_huge_document_memory_is_bounded(tiny_model):
    text = "".join(f"x = {i % 10}\n" for i in range(400_000))  # 2.4 MB

    async def session():
        client = make_test_lsp_client()
        await client.start_io(sys.executable, "-m", "aigc_code.server", "serve", "--model", str(tiny_model))
        await client.initialize_session(
            T.InitializeParams(
                capabilities=T.ClientCapabilities(), initialization_options={"aigcCode": {"maxNewTokens": 4}}
            )
        )
        pid = client._server.pid
        small = "file:///w/small.py"
        client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(small, "python", 1, "x = 1\n")))
        await client.text_document_inline_completion_async(
            T.InlineCompletionParams(  # the model is loaded now
                context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Invoked),
                text_document=T.TextDocumentIdentifier(small),
                position=T.Position(1, 0),
            )
        )
        before = rss_mb(pid)
        uri = "file:///w/huge.py"
        client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "python", 1, text)))
        for line in (399_999, 200_000):
            await client.text_document_inline_completion_async(
                T.InlineCompletionParams(
                    context=T.InlineCompletionContext(T.InlineCompletionTriggerKind.Invoked),
                    text_document=T.TextDocumentIdentifier(uri),
                    position=T.Position(line, 5),
                )
            )
        client.text_document_did_change(
            T.DidChangeTextDocumentParams(
                text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[
                    T.TextDocumentContentChangePartial(
                        range=T.Range(T.Position(10, 0), T.Position(10, 0)), text="y = 2\n"
                    )
                ],
            )
        )
        status = await client.protocol.send_request_async("aigcCode/status", None)
        after = rss_mb(pid)
        await client.shutdown_session()
        await client.stop()
        return status.documents, after - before

    documents, grown = asyncio.run(asyncio.wait_for(session(), 180))
    assert documents == 2
    assert grown < 120, f"the server grew by {grown:.0f} MB for a 2.4 MB document"
