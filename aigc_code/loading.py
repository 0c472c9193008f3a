"""Load a local Hugging Face causal-LM checkpoint (and an optional LoRA adapter), never from a hub.

Every way a checkpoint can be unusable ends in a `ModelLoadError` whose message names the path,
what is wrong with it, and what to pass instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from aigc_code.errors import ModelLoadError

MODEL_ENV = "AIGC_CODE_MODEL"
THREADS_ENV = "AIGC_CODE_THREADS"  # CPU threads for inference (torch's default: all cores)
DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
HINT = f"pass --model PATH to a local Hugging Face checkpoint directory (or set {MODEL_ENV})"

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass
class Loaded:
    model: object
    tokenizer: object
    path: Path
    adapter: Path | None
    device: object
    dtype: object


def resolve_model_path(model: str | Path | None) -> Path:
    """--model, else $AIGC_CODE_MODEL, else the embedded default model."""
    if model is None or str(model) == "":
        model = os.environ.get(MODEL_ENV) or DEFAULT_MODEL_DIR
    return Path(model).expanduser()


def pick_device(device: str | None = None):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def pick_dtype(device, dtype: str | None = None):
    """CUDA: bf16 where supported, else fp16. CPU: fp32 (fast and exact on CPU)."""
    import torch

    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in (None, "auto"):
        if dtype not in names:
            raise ModelLoadError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
        return names[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_checkpoint_dir(path: Path) -> None:
    """Fail early, with a useful message, on a missing or partial checkpoint directory."""
    if not path.exists():
        if path == DEFAULT_MODEL_DIR:
            raise ModelLoadError(f"the embedded default model is missing at {path} (broken install?); {HINT}")
        raise ModelLoadError(f"model path {path} does not exist; {HINT}")
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is not a directory; {HINT}")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json or tokenizer.model)")
    if not any((path / f).is_file() for f in WEIGHT_FILES) and not list(path.glob("*.safetensors")):
        missing.append("weights (*.safetensors)")
    if missing:
        raise ModelLoadError(f"{path} is not a complete checkpoint: missing {', '.join(missing)}; {HINT}")
    try:
        json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path / 'config.json'} is not valid JSON ({exc}); {HINT}") from exc


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {path}: {_short(exc)}") from exc


def load_model(
    model: str | Path | None = None,
    adapter: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    quantize: str | None = None,
) -> Loaded:
    """Load model + tokenizer (+ adapter) from local files, on the best available device.

    `quantize="int8"` (CPU only, opt-in) converts Linear layers to dynamic int8 after loading.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr belongs to the CLI / LSP log, not to weight-loading bars
    if os.environ.get(THREADS_ENV, "").isdigit() and int(os.environ[THREADS_ENV]) > 0:
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    path = resolve_model_path(model)
    check_checkpoint_dir(path)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, dtype)
    tokenizer = load_tokenizer(path)
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype)
    except Exception as exc:
        raise ModelLoadError(f"cannot load model weights from {path}: {_short(exc)}") from exc
    vocab = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab:
        raise ModelLoadError(
            f"tokenizer/model mismatch in {path}: the tokenizer has {len(tokenizer)} tokens "
            f"but the model's embedding has {vocab} rows"
        )
    adapter_path = None
    if adapter:
        adapter_path = Path(adapter).expanduser()
        lm = attach_adapter(lm, adapter_path)
    lm.to(dev).eval()
    if quantize:
        lm = quantize_int8(lm, dev, quantize)
    return Loaded(lm, tokenizer, path, adapter_path, dev, torch_dtype)


def quantize_int8(model, device, mode: str):
    """Dynamic int8 quantization of every nn.Linear (torch.ao): smaller and usually faster on CPU."""
    import warnings

    import torch

    if mode != "int8":
        raise ModelLoadError(f"unknown quantization {mode!r}: the supported value is int8")
    if device.type != "cpu":
        raise ModelLoadError("int8 dynamic quantization runs on CPU only; drop --quantize on a GPU")
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # quantize the merged weights, not the LoRA wrappers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def attach_adapter(model, adapter: Path):
    """Wrap `model` with the peft LoRA adapter in `adapter`, refusing one trained for another base."""
    from peft import PeftModel

    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"adapter {adapter} has no adapter_config.json (not a peft adapter directory); "
            f"pass --adapter DIR written by `aigc-code finetune`"
        )
    fingerprint_file = adapter / "base_model.json"
    if fingerprint_file.is_file():
        expected = json.loads(fingerprint_file.read_text())
        actual = base_fingerprint(model)
        if expected.get("fingerprint") != actual["fingerprint"]:
            raise ModelLoadError(
                f"adapter {adapter} was trained for another base model "
                f"({expected.get('description')}); this model is {actual['description']}"
            )
    import warnings

    try:
        with warnings.catch_warnings():  # peft calls a transformers API that is deprecated upstream
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*did not match any targeted module", category=RuntimeWarning)
            return PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except Exception as exc:
        raise ModelLoadError(f"adapter {adapter} does not fit this model: {_short(exc)}") from exc


def base_fingerprint(model) -> dict:
    """Identifies a base model's architecture and weights well enough to match adapters to it."""
    import hashlib

    cfg = model.config
    shape = f"{cfg.model_type} vocab={cfg.vocab_size} hidden={cfg.hidden_size} layers={cfg.num_hidden_layers}"
    emb = model.get_input_embeddings().weight
    sample = emb.detach().flatten()[:4096].float().cpu().numpy().round(4).tobytes()
    return {"description": shape, "fingerprint": hashlib.sha1(shape.encode() + sample).hexdigest()}


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
