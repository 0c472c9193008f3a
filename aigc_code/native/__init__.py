"""A native (C) decode step for the engine's Llama-family fast path, compiled on first use.

`native_library(fast_lm)` is the compiled decode.c (built by build.py with the system compiler,
loaded with ctypes), or None where it cannot run (not fp32/CPU, no compiler, AIGC_CODE_NATIVE=0);
`NativeStep(fast_lm, lib)` then runs the FastLM's 1..16-token steps in one C call each. Without it
FastLM runs its torch path.
"""

from aigc_code.native.build import NATIVE_ENV, NativeBuildError, load_library
from aigc_code.native.step import MAX_TOKENS, NativeStep, native_library, unsupported_reason

__all__ = ["MAX_TOKENS", "NATIVE_ENV", "NativeBuildError", "NativeStep", "load_library", "native_library",
           "unsupported_reason"]  # fmt: skip
