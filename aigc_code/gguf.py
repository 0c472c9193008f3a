"""Export a checkpoint to GGUF (llama.cpp's format) with llama.cpp's own converter.

`export_gguf(model_dir, out_path, dtype="f32")` runs `convert_hf_to_gguf.py` in a child process.
The converter is found, in this order: the `converter` argument, the `AIGC_CODE_LLAMA_CPP`
environment variable, a copy vendored beside the installed `llama_cpp` package, and the copy
extracted earlier into `~/.cache/aigc-code/llama.cpp/`. Each may name a llama.cpp checkout
(the folder holding `convert_hf_to_gguf.py`), the script itself, or a llama-cpp-python sdist
(`llama_cpp_python-*.tar.gz`, which vendors llama.cpp and `gguf-py`; only the converter's files
are extracted, once, into the cache).

Two things the converter refuses for aigc-code's checkpoints are handled in memory, in the child,
after importing the converter and before running it; no third-party file is edited:
- it knows BPE pre-tokenizers by the hash of a test string's token ids, so a newly trained
  tokenizer is "not recognized"; a tokenizer whose pre-tokenizer is plain GPT-2 byte-level
  (ByteLevel with its regex, no normalizer) is mapped to llama.cpp's "gpt-2";
- a Llama checkpoint is first tried as SentencePiece, which imports `sentencepiece` before
  noticing there is no `tokenizer.model`; that attempt now fails with FileNotFoundError first,
  so BPE checkpoints convert without `sentencepiece` installed.

Run as `python -m aigc_code.gguf MODEL_DIR OUT.gguf [--dtype f32]`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from aigc_code.errors import AigcCodeError

ENV_VAR = "AIGC_CODE_LLAMA_CPP"
SCRIPT = "convert_hf_to_gguf.py"
DTYPES = ("f32", "f16", "bf16", "q8_0")
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aigc-code" / "llama.cpp"


class GGUFError(AigcCodeError):
    """The export could not run or failed; the message says what to do."""


# --------------------------------------------------------------------------------------------
# Finding the converter


def _from_sdist(tarball: Path) -> Path:
    """Extract the converter's files from a llama-cpp-python sdist into the cache (once)."""
    name = tarball.name.removesuffix(".tar.gz").removesuffix(".tgz")
    dest = CACHE / name
    if (dest / SCRIPT).is_file():
        return dest
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    tmp = CACHE / (name + ".partial")
    try:
        with tarfile.open(tarball) as tar:
            members = []
            for m in tar.getmembers():
                _, sep, rest = m.name.partition("vendor/llama.cpp/")
                if sep and rest.startswith(wanted) and (m.isfile() or m.isdir()):
                    m.name = rest
                    members.append(m)
            if not any(m.name == SCRIPT for m in members):
                raise GGUFError(f"{tarball} holds no vendor/llama.cpp/{SCRIPT}: is it a llama-cpp-python sdist?")
            tar.extractall(tmp, members=members, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise GGUFError(f"cannot read {tarball}: {exc}") from exc
    if not dest.exists():
        tmp.replace(dest)
    return dest


def _as_converter_dir(path: Path) -> Path | None:
    if path.is_file() and path.name == SCRIPT:
        return path.parent
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return _from_sdist(path)
    for candidate in (path, path / "vendor" / "llama.cpp"):
        if (candidate / SCRIPT).is_file():
            return candidate
    return None


def _package_candidates() -> list[Path]:
    import importlib.util

    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    pkg = Path(next(iter(spec.submodule_search_locations)))
    return [pkg / "vendor" / "llama.cpp", pkg.parent / "vendor" / "llama.cpp", pkg / "llama.cpp"]


def find_converter(converter: str | os.PathLike | None = None) -> Path:
    """The folder holding `convert_hf_to_gguf.py` (see the module docstring for the search order)."""
    given = converter or os.environ.get(ENV_VAR)
    if given:
        found = _as_converter_dir(Path(given).expanduser())
        if found is None:
            raise GGUFError(f"{given} is not llama.cpp's {SCRIPT}, a folder holding it, or a llama-cpp-python sdist")
        return found
    cached = sorted(CACHE.glob(f"*/{SCRIPT}"), reverse=True)
    for candidate in _package_candidates() + [c.parent for c in cached]:
        if (candidate / SCRIPT).is_file():
            return candidate
    raise GGUFError(
        f"llama.cpp's {SCRIPT} was not found: set {ENV_VAR} to a llama.cpp checkout or to a "
        "llama-cpp-python sdist (pip download --no-deps --no-binary :all: llama-cpp-python)"
    )


# --------------------------------------------------------------------------------------------
# Export


def export_gguf(
    model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    dtype: str = "f32",
    converter: str | os.PathLike | None = None,
    timeout_s: float = 1800.0,
) -> Path:
    """Convert the Hugging Face checkpoint in `model_dir` to a GGUF file at `out_path`; returns it.

    `dtype`: f32 (bit-faithful to the checkpoint), f16, bf16 or q8_0. Raises GGUFError.
    """
    model = Path(model_dir)
    out = Path(out_path)
    if dtype not in DTYPES:
        raise GGUFError(f"unknown GGUF dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if not (model / "config.json").is_file():
        raise GGUFError(f"{model} is not a checkpoint directory (no config.json)")
    conv = find_converter(converter)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(model), "--outfile", str(out), "--outtype", dtype]
    cmd = [sys.executable, "-m", "aigc_code.gguf", "--run-converter", str(conv), *argv]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise GGUFError(f"the GGUF conversion did not finish within {timeout_s:g}s") from exc
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise GGUFError(f"llama.cpp's converter failed (exit {proc.returncode}): " + " | ".join(tail))
    _write_sidecar(model, out)
    return out


def _write_sidecar(model: Path, out: Path) -> None:
    """`<out>.aigc_code.json`: the checkpoint's FIM family and layout, which GGUF has no field for
    (the openai backend's `fim_format="auto"` reads it when the server names this file)."""
    from aigc_code.fim_format import checkpoint_fim_format

    found = checkpoint_fim_format(str(model))
    if found:
        family, _, layout = found.rpartition("-")
        Path(str(out) + ".aigc_code.json").write_text(json.dumps({"fim_family": family, "fim_layout": layout}) + "\n")


# --------------------------------------------------------------------------------------------
# In the child process


def gpt2_style_pre_tokenizer(model_dir: Path) -> bool:
    """True when the checkpoint's tokenizer pre-tokenizes exactly like GPT-2 (byte-level, its regex)."""
    try:
        tok = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    pre = tok.get("pre_tokenizer") or {}
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers") or []) == 1:
        pre = pre["pretokenizers"][0]
    return (
        pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
        and tok.get("normalizer") is None
    )


def _patch_converter() -> None:
    import conversion.base as base  # the converter's package, importable once its folder is on sys.path

    text_model = base.TextModel
    original_pre = text_model.get_vocab_base_pre
    original_spm = text_model._create_vocab_sentencepiece

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original_pre(self, tokenizer)
        except NotImplementedError:
            if gpt2_style_pre_tokenizer(self.dir_model):
                base.logger.info("aigc-code: unknown BPE pre-tokenizer hash mapped to 'gpt-2' (plain byte-level)")
                return "gpt-2"
            raise

    def create_vocab_sentencepiece(self):
        if not (Path(self.dir_model) / "tokenizer.model").is_file():
            raise FileNotFoundError(f"File not found: {Path(self.dir_model) / 'tokenizer.model'}")
        return original_spm(self)

    text_model.get_vocab_base_pre = get_vocab_base_pre
    text_model._create_vocab_sentencepiece = create_vocab_sentencepiece


def _run_converter(conv_dir: str, argv: list[str]) -> None:
    import runpy

    sys.path[:0] = [conv_dir, str(Path(conv_dir) / "gguf-py")]  # its own gguf-py: the version it was written for
    _patch_converter()
    sys.argv = [str(Path(conv_dir) / SCRIPT), *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


def main(args: list[str] | None = None) -> int:
    import argparse

    args = sys.argv[1:] if args is None else args
    if args[:1] == ["--run-converter"] and len(args) >= 2:
        _run_converter(args[1], args[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m aigc_code.gguf", description="Export a checkpoint to GGUF.")
    parser.add_argument("model_dir")
    parser.add_argument("out_path")
    parser.add_argument("--dtype", default="f32", choices=DTYPES)
    parser.add_argument("--converter", help=f"llama.cpp checkout, {SCRIPT}, or llama-cpp-python sdist")
    ns = parser.parse_args(args)
    try:
        out = export_gguf(ns.model_dir, ns.out_path, ns.dtype, ns.converter)
    except GGUFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
