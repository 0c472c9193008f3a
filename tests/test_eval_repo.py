"""`aigc-code eval repo` on a small fixture repository: holes answered through the pipeline with
and without the workspace index, a report, a resume that does nothing more, a refused mix."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_repository_benchmark_on_a_fixture(tmp_path, tiny_model):

    repo = tmp_path / "fixture"
    (repo / "src").mkdir(parents=True)
    for i in range(4):
        (repo / "src" / f"mod{i}.py").write_text(
            textwrap.dedent(f"""\
            import logging

            log = logging.getLogger("service_{i}")


            def handler(event, context):
                payload = json.loads(event["body"])
                log.info("handling %s", payload["id"])
                return {{"statusCode": 200, "body": json.dumps(payload)}}
            """)
        )
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "aigc_code",
        "eval",
        "repo",
        str(repo),
        "--out",
        str(out),
        "--holes",
        "4",
        "--configs",
        "none,copy",
        "--model",
        str(tiny_model),
        "--max-new-tokens",
        "8",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    copy, none = report["overall"]["copy"], report["overall"]["none"]
    assert copy["holes"] == none["holes"] == 4
    assert copy["em_line"] >= 0.5 > none["em_line"] or copy["em_line"] > none["em_line"], report["overall"]
    assert (out / "report.md").exists() and (out / "plot.png").stat().st_size > 1000
    # the answers were restored: the copied repository equals the original again
    for f in (repo / "src").iterdir():
        assert (out / "work" / "fixture" / "src" / f.name).read_text() == f.read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # resume: nothing left to do
    assert again.returncode == 0 and len((out / "results.jsonl").read_text().splitlines()) == 8
    other = subprocess.run([*cmd[:-1], "16"], capture_output=True, text=True, timeout=300)
    assert other.returncode == 1 and "other settings" in other.stderr
