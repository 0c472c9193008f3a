"""The LSP benchmark replays a typing session through the real server (a short run)."""

from __future__ import annotations

from pathlib import Path

from aigc_code.bench.lsp import bench_lsp, default_files


def test_bench_lsp_short_run(tiny_model):
    assert default_files()
    lines = []
    summary = bench_lsp(
        [Path(__file__)], model=str(tiny_model), requests_per_file=3, type_chars=60, max_new_tokens=4, echo=lines.append
    )
    assert summary["requests"] == 3
    assert summary["model_requests"] + summary["cache_hits"] + summary["no_completion"] >= 3
    assert summary["latency_p50_ms"] > 0 and 0 <= summary["overhead_ratio_total"] < 1
    assert "server overhead" in lines[0] and "p95" in lines[0]
