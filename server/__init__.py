"""The aigc-code language server (installed as `aigc_code.server`).

Run it with `aigc-code serve` / `python -m aigc_code.server serve` (stdio; `--tcp` for TCP).
The data path is one straight line:

    documents.py    open documents, incremental tree-sitter parses, UTF-16 positions
    completion.py   pipeline: mode -> cache -> context/prompt (aigc_code.context)
                    -> backend (aigc_code.backends) -> post-process (aigc_code.postprocess)
    lsp.py          thin LSP handlers (inlineCompletion, completion, sync, settings, cancel)
    settings.py     `aigcCode` settings from initializationOptions / didChangeConfiguration
    cache.py        suggestion LRU keyed by the text around the cursor (type-ahead hits)
    backend.py      loads (and reloads) the configured backend
    cli.py          the `serve` command
    bench.py        replays a typing session through the server and reports latency
"""
