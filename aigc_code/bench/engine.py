"""`aigc-code bench engine`: decode speed and time to first token, aigc-code's engine vs its peers.

The same prompt ids go, in the same run and interleaved round by round, to

- aigc-code's engine (its fast path, with and without prompt-lookup decoding; the same fast path
  with its torch step instead of the native C step, `AIGC_CODE_NATIVE=0`, where the native step
  runs; and the plain Hugging Face forward it replaces, `AIGC_CODE_FAST=0`),
- `transformers` `generate` on the same loaded model,
- llama.cpp through `llama-cpp-python` (when installed) on a GGUF converted from the same
  checkpoint by `aigc_code.gguf.export_gguf` (f32 for fp32, q8_0 for int8, bf16 for bf16).

Every runner greedy-decodes a fixed number of tokens (end-of-text does not stop it), so the
rows compare like with like. Models: the shipped checkpoint (or --model) and a random-weight
model with Qwen2.5-Coder-0.5B's shape and real Qwen tokenizer (speed does not depend on the
weights; prompt lookup does, so its random-weight row says little). Figures are medians over
rounds of medians; ratios are against llama.cpp (and transformers) measured in the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aigc-code" / "bench"
GGUF_TYPES = {"fp32": "f32", "int8": "q8_0", "bf16": "bf16"}
# Qwen2.5-Coder-0.5B's published config.json (the fields that decide the amount of work)
QWEN_05B = {
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06, "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": 32768,
    "max_window_layers": 24,
}  # fmt: skip


@dataclass
class Row:
    model: str
    dtype: str
    runner: str
    ttft_ms: float | None = None
    decode_tok_s: float | None = None
    tokens: int = 0
    skipped: str | None = None
    same_tokens_as_transformers: bool | None = None
    token_ids: list[int] = field(default_factory=list, repr=False)


@dataclass
class Timing:
    ttft_ms: float
    decode_tok_s: float
    tokens: list[int]


# -- models ------------------------------------------------------------------------------------
def qwen05b_checkpoint(root: Path = CACHE) -> Path:
    """A random-weight checkpoint with Qwen2.5-Coder-0.5B's shape and the real Qwen tokenizer (built once)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from aigc_code.testing_checkpoints import qwen_tokenizer

    path = root / "qwen2.5-coder-0.5b-shape"
    if (path / "model.safetensors").is_file():
        return path
    tokenizer = qwen_tokenizer("qwen3")
    config = Qwen2Config(**QWEN_05B, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    tmp = path.with_name(path.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(tmp)
    model.save_pretrained(tmp, max_shard_size="4GB")
    tmp.rename(path)
    return path


def resolve_models(names: list[str], model: str | None) -> dict[str, Path]:
    from aigc_code.loading import resolve_model_path

    out = {}
    for name in names:
        if name == "shipped":
            out["shipped" if model is None else Path(model).name] = resolve_model_path(model)
        elif name in ("0.5b", "qwen-0.5b"):
            out["qwen2.5-coder-0.5b-shape"] = qwen05b_checkpoint()
        else:
            raise ValueError(f"unknown model {name!r}: use shipped or 0.5b")
    return out


def prompt_ids(tokenizer, count: int) -> list[int]:
    """`count` token ids of real code (HumanEval-X Python solutions), the same for every runner."""
    from aigc_code.bench.typing import load_problems

    text = ""
    for problem in load_problems("python"):
        text += problem["prompt"] + problem["canonical_solution"] + "\n\n"
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= count:
            return ids[:count]
    return ids


# -- runners -----------------------------------------------------------------------------------
def engine_runner(engine, ids: list[int], new_tokens: int, lookup: int) -> Callable[[], Timing]:
    from aigc_code.engine import Prompt
    from aigc_code.generation import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=new_tokens, prompt_lookup=lookup)
    engine.reuse_kv = False
    engine._stop_ids = set()  # a fixed number of tokens, as the other runners decode

    def run() -> Timing:
        result = engine.run(Prompt(list(ids)), cfg)
        tokens = result.candidates[0].token_ids
        decode_ms = result.total_ms - result.prompt_ms
        return Timing(result.prompt_ms, (len(tokens) - 1) / (decode_ms / 1000) if decode_ms > 0 else 0.0, tokens)

    return run


def transformers_runner(model, ids: list[int], new_tokens: int) -> Callable[[], Timing]:
    import torch

    tensor = torch.tensor([ids], device=model.device)
    # min_new_tokens: end-of-text cannot stop it early (a fixed number of tokens, like the other runners)
    kwargs = {"attention_mask": torch.ones_like(tensor), "do_sample": False, "pad_token_id": 0}

    def run() -> Timing:
        with torch.inference_mode():
            start = time.perf_counter()
            model.generate(tensor, max_new_tokens=1, min_new_tokens=1, **kwargs)
            ttft = time.perf_counter() - start
            start = time.perf_counter()
            out = model.generate(tensor, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
            total = time.perf_counter() - start
        tokens = out[0, len(ids) :].tolist()
        return Timing(ttft * 1000, (len(tokens) - 1) / max(1e-9, total - ttft), tokens)

    return run


def llama_cpp_runner(gguf: Path, ids: list[int], new_tokens: int, threads: int, n_ctx: int) -> Callable[[], Timing]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
                verbose=False, logits_all=False)  # fmt: skip

    def run() -> Timing:
        llm.reset()  # no prefix reuse from the previous run: every run prefills the whole prompt
        tokens: list[int] = []
        start = time.perf_counter()
        first = 0.0
        for tok in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if not tokens:
                first = time.perf_counter()
            tokens.append(int(tok))
            if len(tokens) >= new_tokens:
                break
        end = time.perf_counter()
        return Timing((first - start) * 1000, (len(tokens) - 1) / max(1e-9, end - first), tokens)

    return run


# -- measuring ---------------------------------------------------------------------------------
def measure(runners: dict[str, Callable[[], Timing]], rounds: int, runs: int) -> dict[str, Timing]:
    """Median over `rounds` of the median of `runs` runs; runners alternate within each round."""
    per: dict[str, list[Timing]] = {name: [] for name in runners}
    for run in runners.values():
        run()  # warm-up (allocations, lazily built tables)
    for _ in range(rounds):
        for name, run in runners.items():
            timings = [run() for _ in range(runs)]
            per[name].append(Timing(statistics.median(t.ttft_ms for t in timings),
                                    statistics.median(t.decode_tok_s for t in timings), timings[-1].tokens))  # fmt: skip
    return {
        name: Timing(
            statistics.median(t.ttft_ms for t in ts), statistics.median(t.decode_tok_s for t in ts), ts[-1].tokens
        )  # fmt: skip
        for name, ts in per.items()
    }


@contextlib.contextmanager
def _setting(name: str, enabled: bool):
    """Environment switch `name` set to "1"/"0" while engines are built (restored after)."""
    old = os.environ.get(name)
    os.environ[name] = "1" if enabled else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _fast_path(enabled: bool):
    from aigc_code.fastdecode import FAST_ENV

    return _setting(FAST_ENV, enabled)


def _native_step(enabled: bool):
    from aigc_code.native import NATIVE_ENV

    return _setting(NATIVE_ENV, enabled)


def gguf_for(model_dir: Path, dtype: str) -> Path:
    """The checkpoint converted to GGUF by aigc-code's own exporter (cached beside the bench models)."""
    from aigc_code.gguf import export_gguf

    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    stamp = int(max(p.stat().st_mtime for p in weights)) if weights else 0
    out = CACHE / "gguf" / f"{model_dir.name}-{stamp}-{GGUF_TYPES[dtype]}.gguf"
    if not out.is_file():
        export_gguf(model_dir, out, dtype=GGUF_TYPES[dtype])
    return out


PROBE = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
print(len(llm.eval([1, 2, 3]) or []))
"""


def probe_gguf(gguf: Path) -> None:
    """Load and run the GGUF once in a child process: llama.cpp crashes on some tiny shapes, the bench must not."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PROBE, str(gguf)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"llama.cpp cannot run {gguf.name} (exit {proc.returncode}: {tail[:120]})")


def _llama_cpp_missing() -> str | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "skipped: llama-cpp-python not installed"
    return None


def bench_model(name: str, path: Path, dtype: str, opts: dict) -> list[Row]:
    """All runners on one model in one dtype."""
    from aigc_code.engine import Engine
    from aigc_code.loading import load_model

    loaded = load_model(path, dtype="bfloat16" if dtype == "bf16" else "float32",
                        quantize="int8" if dtype == "int8" else None)  # fmt: skip
    ids = prompt_ids(loaded.tokenizer, opts["prompt_tokens"])
    n = opts["new_tokens"]
    with _fast_path(True):
        fast = Engine(loaded, reuse_kv=False)
    runners = {"aigc-code": engine_runner(fast, ids, n, 0), "aigc-code+lookup": engine_runner(fast, ids, n, 8)}
    if opts["hf_engine"]:  # the rows "before": the fast path's torch step (where the native one runs), HF's forward
        if fast._fast is not None and fast._fast.native is not None:
            with _fast_path(True), _native_step(False):
                runners["aigc-code (torch step)"] = engine_runner(Engine(loaded, reuse_kv=False), ids, n, 0)
        with _fast_path(False):
            runners["aigc-code (HF forward)"] = engine_runner(Engine(loaded, reuse_kv=False), ids, n, 0)
    runners["transformers"] = transformers_runner(loaded.model, ids, n)
    skipped = {}
    missing = _llama_cpp_missing() if opts["llama_cpp"] else "skipped: --no-llama-cpp"
    if missing:
        skipped["llama.cpp"] = missing
    else:
        try:
            gguf = gguf_for(path, dtype)
            probe_gguf(gguf)
            runners["llama.cpp"] = llama_cpp_runner(gguf, ids, n, opts["threads"], len(ids) + n + 16)
        except Exception as exc:  # a converter failure is a row, not a crashed benchmark
            skipped["llama.cpp"] = f"skipped: {str(exc).splitlines()[0][:200]}"
    timings = measure(runners, opts["rounds"], opts["runs"])
    reference = timings["transformers"].tokens
    rows = [Row(name, dtype, runner, t.ttft_ms, t.decode_tok_s, len(t.tokens), None, t.tokens == reference, t.tokens)
            for runner, t in timings.items()]  # fmt: skip
    rows += [Row(name, dtype, runner, skipped=why) for runner, why in skipped.items()]
    return rows


def ratios(rows: list[Row]) -> list[dict]:
    """Each runner against llama.cpp and transformers on the same model and dtype."""
    out = []
    for row in rows:
        if row.skipped:
            continue
        group = {r.runner: r for r in rows if r.model == row.model and r.dtype == row.dtype and not r.skipped}
        entry = {"model": row.model, "dtype": row.dtype, "runner": row.runner}
        for base in ("llama.cpp", "transformers"):
            if base in group and base != row.runner:
                entry[f"decode_vs_{base}"] = row.decode_tok_s / group[base].decode_tok_s
                entry[f"ttft_vs_{base}"] = row.ttft_ms / group[base].ttft_ms
        out.append(entry)
    return out


def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}  # fmt: skip


def supported_dtypes(dtypes: list[str]) -> tuple[list[str], dict[str, str]]:
    """bf16 only where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    keep, dropped = [], {}
    for dtype in dtypes:
        if dtype not in GGUF_TYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use fp32, int8 or bf16")
        if dtype == "bf16" and not any(f in flags for f in ("avx512_bf16", "amx_bf16")):
            dropped[dtype] = "skipped: this CPU has no native bf16 arithmetic"
        else:
            keep.append(dtype)
    return keep, dropped


def bench_engine(models: list[str], dtypes: list[str], model: str | None = None, prompt_tokens: int = 300,
                 new_tokens: int = 64, rounds: int = 3, runs: int = 5, threads: int = 1, llama_cpp: bool = True,
                 hf_engine: bool = True, progress: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """Run the comparison; returns {"machine", "settings", "rows", "ratios"} (JSON-ready)."""
    import torch

    torch.set_num_threads(threads)
    keep, dropped = supported_dtypes(dtypes)
    paths = resolve_models(models, model)
    opts = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "rounds": rounds, "runs": runs,
            "threads": threads, "llama_cpp": llama_cpp, "hf_engine": hf_engine}  # fmt: skip
    info = machine()
    rows: list[Row] = []
    for name, path in paths.items():
        for dtype in keep:
            if progress:
                progress(f"{name} {dtype} ...")
            rows += bench_model(name, path, dtype, opts)
        rows += [Row(name, dtype, "all", skipped=why) for dtype, why in dropped.items()]
    info["loadavg_end"] = os.getloadavg()
    return {"machine": info, "settings": opts, "rows": [_row_json(r) for r in rows], "ratios": ratios(rows)}


def _row_json(row: Row) -> dict:
    data = asdict(row)
    data.pop("token_ids")
    return data


def format_table(result: dict) -> str:
    """A plain-text table of the rows, with decode and TTFT ratios against llama.cpp."""
    by_key = {(r["model"], r["dtype"], r["runner"]): r for r in result["ratios"]}
    lines = [f"{'model':28} {'dtype':5} {'runner':24} {'decode tok/s':>12} {'TTFT ms':>8} "
             f"{'x llama.cpp':>11} {'TTFT x':>7} {'x transf.':>9}  same"]  # fmt: skip
    for row in result["rows"]:
        head = f"{row['model'][:28]:28} {row['dtype']:5} {row['runner'][:24]:24}"
        if row["skipped"]:
            lines.append(f"{head} {row['skipped']}")
            continue
        ratio = by_key.get((row["model"], row["dtype"], row["runner"]), {})
        lines.append(f"{head} {row['decode_tok_s']:12.1f} {row['ttft_ms']:8.1f} "
                     f"{_fmt(ratio.get('decode_vs_llama.cpp')):>11} {_fmt(ratio.get('ttft_vs_llama.cpp')):>7} "
                     f"{_fmt(ratio.get('decode_vs_transformers')):>9}  {row['same_tokens_as_transformers']}")  # fmt: skip
    load = result["machine"]
    lines.append(f"threads={result['settings']['threads']} load average start={load['loadavg_start'][0]:.2f} "
                 f"end={load['loadavg_end'][0]:.2f} ({load['cores']} cores)")  # fmt: skip
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def save(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
