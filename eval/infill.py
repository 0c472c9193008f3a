"""``--benchmark humaneval-x-infill``: execution-based fill-in-the-middle tasks for six languages.

Built from each HumanEval-X canonical solution the way Bavarian et al. (2022) built
HumanEval-Infilling from HumanEval:

* single-line: one non-blank line of the solution is the hole (its newline stays in the suffix);
  line holes start after the line's indentation, where an editor's cursor is after auto-indent
  (Bavarian et al. include it in the hole);
* multi-line: a block of two or more consecutive lines (first and last non-blank) is the hole;
* random-span: the hole is the text between two random characters of the solution.

The document the model sees is ``setup + prompt + solution[:a]`` | hole | ``solution[b:]``;
the program that is executed is that document with the completion in the hole, then the
tests. ``--infill-per-type N`` keeps N tasks of each type per problem (0: up to 50 of each),
chosen with a seed fixed per problem, so every run builds the same tasks.
"""

from __future__ import annotations

import random
import zlib

from aigc_code.eval.problems import Problem

KINDS = ("single-line", "multi-line", "random-span")
MAX_ALL = 50  # tasks of one type per problem when --infill-per-type 0


def _line_spans(solution: str) -> list[tuple[int, int, bool]]:
    """(start, end, non-blank) of each line of ``solution``; the end excludes the newline, which stays
    in the suffix: the editor's case of a cursor on an empty line, with the lines below in place."""
    spans, pos = [], 0
    for line in solution.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        spans.append((pos, pos + len(body), bool(body.strip())))
        pos += len(line)
    return spans


def _indent(solution: str, a: int) -> int:
    """``a`` moved past the indentation of the line it starts: the cursor after the editor's auto-indent."""
    while a < len(solution) and solution[a] in " \t":
        a += 1
    return a


def single_line_holes(solution: str) -> list[tuple[int, int]]:
    return [(_indent(solution, a), b) for a, b, full in _line_spans(solution) if full]


def multi_line_holes(solution: str) -> list[tuple[int, int]]:
    spans = _line_spans(solution)
    return [
        (_indent(solution, spans[i][0]), spans[j][1])
        for i in range(len(spans))
        for j in range(i + 1, len(spans))
        if spans[i][2] and spans[j][2]
    ]


def random_span_holes(solution: str, rng: random.Random, count: int) -> list[tuple[int, int]]:
    holes: list[tuple[int, int]] = []
    if len(solution.strip()) < 2:
        return holes
    for _ in range(count * 20):
        a, b = sorted(rng.sample(range(len(solution) + 1), 2))
        if solution[a:b].strip() and (a, b) not in holes:
            holes.append((a, b))
        if len(holes) >= count:
            break
    return holes


def _pick(holes: list[tuple[int, int]], rng: random.Random, count: int) -> list[tuple[int, int]]:
    if len(holes) <= count:
        return holes
    return sorted(rng.sample(holes, count))


def holes_of(problem: Problem, per_type: int) -> dict[str, list[tuple[int, int]]]:
    """The (start, end) character holes of each task type in ``problem``'s canonical solution."""
    solution = problem.canonical_solution or ""
    count = per_type if per_type > 0 else MAX_ALL
    rng = random.Random(zlib.crc32(f"{problem.language}:{problem.task_id}".encode()))
    return {
        "single-line": _pick(single_line_holes(solution), rng, count),
        "multi-line": _pick(multi_line_holes(solution), rng, count),
        "random-span": random_span_holes(solution, rng, count),
    }


def infill_tasks(problem: Problem, per_type: int = 1) -> list[Problem]:
    """The infilling tasks of one left-to-right problem (in a fixed order)."""
    solution = problem.canonical_solution or ""
    tasks = []
    for kind, holes in holes_of(problem, per_type).items():
        for k, (a, b) in enumerate(holes):
            tasks.append(
                Problem(
                    task_id=f"{problem.task_id}/{kind}/{k}",
                    language=problem.language,
                    prompt=problem.prompt + solution[:a],
                    tests=problem.tests,
                    entry_point=problem.entry_point,
                    canonical_solution=solution[a:b],
                    setup=problem.setup,
                    suffix=solution[b:],
                    kind=kind,
                )
            )
    return tasks


def build_infill(by_lang: dict[str, list[Problem]], per_type: int = 1) -> dict[str, list[Problem]]:
    return {
        lang: [t for p in probs if p.canonical_solution for t in infill_tasks(p, per_type)]
        for lang, probs in by_lang.items()
    }


def base_task_id(task_id: str) -> str:
    """``Python/3/single-line/0`` -> ``Python/3``; other ids unchanged."""
    parts = task_id.split("/")
    if len(parts) >= 4 and parts[-2] in KINDS:
        return "/".join(parts[:-2])
    return task_id.removesuffix(RAW_SUFFIX)


def task_kind(task_id: str) -> str | None:
    parts = task_id.removesuffix(RAW_SUFFIX).split("/")
    return parts[-2] if len(parts) >= 4 and parts[-2] in KINDS else None


RAW_SUFFIX = ":raw"  # task id of the same task executed with the backend's text before post-processing
