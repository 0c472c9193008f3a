"""`aigc-code merge`: fold a LoRA adapter into its base model's weights (a plain checkpoint)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from aigc_code.errors import AigcCodeError

ENGINE_FILES = ("aigc_code.json",)


class MergeError(AigcCodeError):
    """The merged model cannot be written as asked."""


def adapter_base(adapter: Path) -> str | None:
    """The base model an adapter was trained on, as recorded by `aigc-code finetune` (or peft)."""
    for name, key in (("finetune_report.json", "base_model"), ("adapter_config.json", "base_model_name_or_path")):
        try:
            value = json.loads((adapter / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if value and Path(value).is_dir():
            return value
    return None


def merge(adapter: Path, out: Path, base: str | None = None, device: str | None = "cpu") -> Path:
    """Write base + adapter merged (peft `merge_and_unload`) and the tokenizer to `out`."""
    from aigc_code.loading import load_model

    adapter = Path(adapter).expanduser()
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"{out} already exists and is not empty; choose another --out")
    base = base or adapter_base(adapter)
    loaded = load_model(base, adapter=adapter, device=device, dtype="float32")  # checks the adapter fits
    merged = loaded.model.merge_and_unload()
    stored = _stored_dtype(loaded.path)
    if stored is not None:
        merged = merged.to(stored)  # merged in fp32, stored as the base model was (e.g. bf16)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(tmp))
    for name in ENGINE_FILES:  # how the engine prompts this model (e.g. its FIM layout) carries over
        if (loaded.path / name).is_file():
            shutil.copy2(loaded.path / name, tmp / name)
    (tmp / "merged_from.json").write_text(json.dumps({"base": str(loaded.path), "adapter": str(adapter)}, indent=1))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


def _stored_dtype(path: Path):
    import torch

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("dtype") or config.get("torch_dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)
