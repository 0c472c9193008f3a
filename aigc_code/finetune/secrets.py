"""Find credentials in source files so that they never become training data.

A file with any finding is left out of finetuning entirely and listed in the report by path,
rule and line number. The matched text itself is never stored, printed or reported.

The rules favour recall for well-known credential formats (a key's shape is enough) and use an
entropy test for the generic `api_key = "..."` kind, which otherwise matches placeholders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int  # 1-based

    def to_json(self) -> dict:
        return {"rule": self.rule, "line": self.line}


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    accept: Callable[[re.Match], bool] | None = None  # extra test on the match (entropy, placeholders)


def shannon_entropy(s: str) -> float:
    """Bits per character of `s` (random base64 is ~6, English words ~3-4, 'xxxx' 0)."""
    if not s:
        return 0.0
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_PLACEHOLDER = re.compile(
    r"(?i)^(x+|\*+|\.+|-+|0+|your|my|example|sample|dummy|fake|test|changeme|placeholder|redacted|todo|none|null)"
    r"|<[^>]*>|\$\{|\{\{|%\(|%s|process\.env|os\.environ|getenv"
)


def _generic_secret(m: re.Match) -> bool:
    value = m.group("value")
    if _PLACEHOLDER.search(value):
        return False
    if not (re.search(r"[A-Za-z]", value) and re.search(r"\d", value)):
        return False  # words and sentences are not keys
    return shannon_entropy(value) >= 3.5


def _aws_secret(m: re.Match) -> bool:
    value = m.group("value")
    return shannon_entropy(value) >= 3.5 and not _PLACEHOLDER.search(value)


RULES: list[Rule] = [
    Rule("private-key", re.compile(r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|PuTTY-User-Key-File-\d")),
    # the body of an OpenSSH key starts with base64("openssh-key-v1"); split so this file does not match itself
    Rule("openssh-private-key", re.compile("b3BlbnNz" + "aC1rZXktdjE")),
    Rule(
        "aws-access-key-id",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])"),
    ),
    Rule(
        "aws-secret-access-key",
        re.compile(
            r"(?i)aws.{0,20}?(?:secret|private)?.{0,10}?(?:access)?.{0,5}?key.{0,5}?[\"'\s:=>]{1,6}"
            r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        _aws_secret,
    ),
    Rule(
        "gcp-service-account",
        re.compile(
            r"\"type\"\s*:\s*\"service_account\"[\s\S]{0,3000}?\"private_key(?:_id)?\"|"
            r"\"private_key(?:_id)?\"[\s\S]{0,3000}?\"type\"\s*:\s*\"service_account\""
        ),
    ),
    Rule("gcp-api-key", re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])")),
    Rule(
        "azure-connection-string",
        re.compile(r"(?i)(?:AccountKey|SharedAccessKey|SharedAccessSignature)\s*=\s*[A-Za-z0-9+/%=&:-]{20,}"),
    ),
    Rule("github-token", re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,})")),
    Rule("huggingface-token", re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{34}(?![A-Za-z0-9])")),
    Rule("gitlab-token", re.compile(r"(?<![A-Za-z0-9_])glpat-[A-Za-z0-9_-]{20}")),
    Rule("slack-token", re.compile(r"(?<![A-Za-z0-9])xox[abpr]-[A-Za-z0-9-]{10,}")),
    Rule(
        "slack-webhook", re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+")
    ),
    Rule("stripe-key", re.compile(r"(?<![A-Za-z0-9])(?:sk|rk)_live_[0-9A-Za-z]{20,}")),
    Rule("openai-key", re.compile(r"(?<![A-Za-z0-9])sk-(?:proj-)?[A-Za-z0-9_-]{20}T3BlbkFJ[A-Za-z0-9_-]{20,}")),
    Rule("jwt", re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    Rule(
        "generic-secret",
        re.compile(
            r"(?i)(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|client[_-]?secret|"
            r"private[_-]?key|passw(?:or)?d|token)[\"']?\s*(?::=|=>|[:=])\s*"
            r"[bru]?[\"'`](?P<value>[^\"'`\s]{16,200})[\"'`]"
        ),
        _generic_secret,
    ),
]


def scan(text: str) -> list[Finding]:
    """Every rule that matches `text`, once per rule, with the line of its first match."""
    findings = []
    for rule in RULES:
        for m in rule.pattern.finditer(text):
            if rule.accept is None or rule.accept(m):
                findings.append(Finding(rule.name, text.count("\n", 0, m.start()) + 1))
                break
    return findings
