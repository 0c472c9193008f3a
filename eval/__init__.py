"""aigc-code's execution-based evaluation harness (installed as ``aigc_code.eval``).

See eval/README.md. Modules: problems (benchmarks), executors (per-language assembly and
judging), sandbox + worker (containment and the warm worker pool), toolchains, generation,
runner/store/metrics/report (``eval run`` / ``eval report``), bench (``eval bench-executor``, code in aigc_code/bench/harness.py),
cli (the typer app mounted as ``aigc-code eval``).
"""
