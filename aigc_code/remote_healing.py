"""Token healing through a remote server: the prompt's last token is taken back and the output
must start with its text. On llama.cpp servers a GBNF grammar constrains it (`heal_grammar`);
elsewhere only a trailing whitespace run is taken back (`heuristic_heal`), and `strip_heal` takes
the healed text off the output again."""

from __future__ import annotations

import os
import re


def _gbnf_literal(text: str) -> str:
    return (
        '"'
        + "".join(
            c
            if c.isalnum() or c in " _-.:,;()[]{}<>=+*/&|!?#@$%^~`'"
            else f"\\x{ord(c):02x}"
            if ord(c) < 0x100
            else f"\\u{ord(c):04x}"
            if ord(c) < 0x10000
            else f"\\U{ord(c):08x}"
            for c in text
        )
        + '"'
    )


def heal_grammar(heal: str, stop_chars: str = "") -> str:
    """GBNF: the output starts with `heal`, then anything (token healing on llama.cpp servers).
    `stop_chars`: one-character stop strings that the healed text itself contains (a one-line
    completion at the start of an indented line heals "\\n    " under the stop "\\n"): the server
    would stop on the healed characters, so the grammar ends the output at the first of them after it
    (and the indentation in the same token)."""
    if not stop_chars:
        return f"root ::= {_gbnf_literal(heal)} rest\nrest ::= [^\\x00]*\n"
    chars = "".join(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in stop_chars)
    # the stop may come with indentation in one token ("\\n    "): allowed, and the output ends there
    return f"root ::= {_gbnf_literal(heal)} rest\nrest ::= [^\\x00{chars}]* ([{chars}] [ \\t]*)?\n"


def heuristic_heal(prefix: str) -> str:
    """Without the server's tokenizer: the trailing whitespace run (newline + indentation), which a
    byte-level BPE glues into one pre-token the model never saw at a prompt's end."""
    m = re.search(r"\s+$", prefix[-64:])
    return m.group(0) if m and len(m.group(0)) < 64 else ""


def strip_heal(text: str, heal: str) -> str:
    """The generated text after the cursor: `heal` (removed from the prompt) taken off its start."""
    if not heal or text.startswith(heal):
        return text[len(heal) :]
    if heal.startswith(text):
        return ""  # stopped inside the healed characters
    common = len(os.path.commonprefix([text, heal]))
    return text[common:]
