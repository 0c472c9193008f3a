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
    if summary["model_requests"]:  # the wire latency ends when the answer arrives, before the client decodes it
        assert summary["client_latency_p50_ms"] >= summary["model_latency_p50_ms"] > 0
        # every answer the model made carries the server's stamp of its write, on this machine's one clock
        assert summary["server_stamped"] == summary["model_requests"]
        assert 0 < summary["answered_p50_ms"] <= summary["model_latency_p50_ms"]
        assert summary["client_wake_p50_ms"] >= 0 and "on the server's side of the pipe" in lines[0]
    assert "server overhead" in lines[0] and "p95" in lines[0] and "latency (wire" in lines[0]
    if Path("/proc/stat").is_file():  # Linux: the host's steal share is reported beside the ratio
        assert 0 <= summary["cpu_steal_share"] <= 1 and "host CPU steal" in lines[0]


def test_bench_lsp_runs_pool_their_requests(tiny_model):
    """Two runs, a fresh server each: the summary pools both runs' requests and lists each run's ratio."""
    lines = []
    summary = bench_lsp(
        [Path(__file__)],
        model=str(tiny_model),
        requests_per_file=2,
        type_chars=40,
        max_new_tokens=4,
        runs=2,
        echo=lines.append,
    )
    assert summary["runs"] == 2 and summary["requests"] == 4
    assert len(summary["overhead_ratio_p50_per_run"]) == 2
    assert all(0 <= r < 1 for r in summary["overhead_ratio_p50_per_run"])
    assert "runs: 2" in lines[0]


def test_module_entry_point_is_the_cli_command(tiny_model, tmp_path):
    """`python -m aigc_code.bench.lsp` takes `aigc-code bench lsp`'s options (one set of names)."""
    import json
    import subprocess
    import sys

    missing = subprocess.run(
        [sys.executable, "-m", "aigc_code.bench.lsp", str(tmp_path / "nope.py")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
    out = tmp_path / "lsp.json"
    args = [str(Path(__file__)), "--model", str(tiny_model), "--requests-per-file", "2", "--max-new-tokens", "4"]
    ran = subprocess.run(
        [sys.executable, "-m", "aigc_code.bench.lsp", *args, "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads(out.read_text())["requests"] == 2
