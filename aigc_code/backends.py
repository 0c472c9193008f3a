"""Where completions come from: the local engine, or an OpenAI-compatible `/v1/completions`
server (vLLM, TGI, llama.cpp server, ...).

Both take a FIM prefix and suffix and return `GenerationResult` (candidates with token
log-probabilities and timings); both honour a `CancellationToken` set from another thread.
"""

from __future__ import annotations

import json
import os
import time
from typing import Protocol

from aigc_code.context import ApproxTokens, TokenCounter
from aigc_code.errors import BackendError
from aigc_code.fim import KNOWN_FIM
from aigc_code.generation import CancellationToken, Candidate, GenerationConfig, GenerationResult


class Backend(Protocol):
    kind: str
    max_context: int | None  # prompt + generation tokens the model can take, None if unknown
    tokens: TokenCounter

    def complete(self, prefix: str, suffix: str, request: GenerationConfig, cancel: CancellationToken | None = None) -> GenerationResult: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Local engine


class LocalBackend:
    kind = "local"

    def __init__(self, model: str | None = None, adapter: str | None = None, device: str | None = None):
        from aigc_code.engine import load_engine

        self.engine = load_engine(model=model, adapter=adapter, device=device)
        self.tokens: TokenCounter = self.engine
        self.max_context = getattr(self.engine, "max_context", None)

    def complete(self, prefix: str, suffix: str, request: GenerationConfig, cancel: CancellationToken | None = None) -> GenerationResult:
        return self.engine.complete(prefix, suffix, config=request, cancel=cancel)

    def describe(self) -> str:
        fim = self.engine.fim.family if getattr(self.engine, "fim", None) else "no FIM tokens (prefix only)"
        return f"local model {self.engine.name} ({fim}, {self.max_context} tokens) on {self.engine.device}"

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP server


def completions_url(endpoint: str) -> str:
    """`http://host:port`, `.../v1` or `.../v1/completions` -> the completions URL."""
    url = endpoint.rstrip("/")
    if url.endswith("/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/completions"
    return url + "/v1/completions"


def fim_prompt(fim_format: str, prefix: str, suffix: str) -> tuple[str, str | None]:
    """(prompt, suffix field or None) for a FIM family name, "suffix", or a custom template."""
    if fim_format == "suffix":
        return prefix, suffix
    if "{prefix}" in fim_format:
        return fim_format.replace("{prefix}", prefix).replace("{suffix}", suffix), None
    for fim in KNOWN_FIM:
        if fim.family == fim_format:
            return fim.psm(prefix, suffix), None
    known = sorted({f.family for f in KNOWN_FIM})
    raise BackendError(f"unknown FIM format {fim_format!r}: use one of {', '.join(known)}, 'suffix', or a template with {{prefix}} and {{suffix}}")


def _fim_stops(fim_format: str) -> list[str]:
    for fim in KNOWN_FIM:
        if fim.family == fim_format:
            return [fim.prefix, fim.suffix, fim.middle, *fim.eot]
    return []


class OpenAIBackend:
    """POSTs FIM prompts to an OpenAI-compatible `/v1/completions` endpoint (streaming when the
    server supports it, so that cancellation takes effect between chunks)."""

    kind = "openai"

    def __init__(self, endpoint: str, model: str | None = None, fim_format: str = "starcoder",
                 api_key: str | None = None, timeout_s: float = 30.0, stream: bool = True):
        import httpx

        if not endpoint:
            raise BackendError("the openai backend needs an endpoint: pass --endpoint URL (e.g. http://127.0.0.1:8000/v1)")
        fim_prompt(fim_format, "", "")  # validate early
        self.url = completions_url(endpoint)
        self.model = model
        self._model_probed = model is not None
        self.fim_format = fim_format
        self.timeout_s = timeout_s
        self.stream = stream
        self.tokens: TokenCounter = ApproxTokens()
        self.max_context = None
        headers = {"Accept": "application/json"}
        key = api_key or os.environ.get("AIGC_CODE_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)), headers=headers)

    def check(self) -> str:
        """Ask the server for one token; raises BackendError with a clear message when it is down."""
        result = self.complete("def", "", GenerationConfig(max_new_tokens=1))
        return f"{self.describe()}: answered in {result.total_ms:.0f} ms"

    def describe(self) -> str:
        return f"openai-compatible endpoint {self.url} (model {self.model or 'server default'}, FIM {self.fim_format})"

    def close(self) -> None:
        self._client.close()

    def _probe_model(self) -> None:
        """Without a configured model name, ask `/v1/models` once and use the first one
        (vLLM wants the name; servers that serve one model ignore it)."""
        self._model_probed = True
        try:
            resp = self._client.get(self.url.rsplit("/", 1)[0] + "/models", timeout=min(5.0, self.timeout_s))
            data = resp.json().get("data") if resp.status_code == 200 else None
            if data and isinstance(data[0], dict) and isinstance(data[0].get("id"), str):
                self.model = data[0]["id"]
        except Exception:  # the completion request itself will report a dead endpoint
            pass

    def _payload(self, prefix: str, suffix: str, request: GenerationConfig) -> dict:
        prompt, suffix_field = fim_prompt(self.fim_format, prefix, suffix)
        payload: dict = {
            "prompt": prompt,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "n": request.n,
            "stream": self.stream,
        }
        if suffix_field is not None:
            payload["suffix"] = suffix_field
        if self.model:
            payload["model"] = self.model
        stops = [s for s in request.stop if s][:4]  # the OpenAI API takes at most 4
        if stops:
            payload["stop"] = stops
        if request.n > 1:
            payload["logprobs"] = 1
        if request.seed is not None:
            payload["seed"] = request.seed
        return payload

    def complete(self, prefix: str, suffix: str, request: GenerationConfig, cancel: CancellationToken | None = None) -> GenerationResult:
        import httpx

        if not self._model_probed:
            self._probe_model()
        payload = self._payload(prefix, suffix, request)
        n = max(1, request.n)
        texts = [""] * n
        logprobs: list[list[float]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        usage: dict = {}
        start = time.perf_counter()
        first_ms: float | None = None
        cancelled = False

        def take(choices: list) -> None:
            for choice in choices or []:
                i = int(choice.get("index", 0) or 0)
                if not 0 <= i < n:
                    continue
                texts[i] += choice.get("text") or ""
                lp = choice.get("logprobs") or {}
                if isinstance(lp, dict) and lp.get("token_logprobs"):
                    logprobs[i].extend(float(x) for x in lp["token_logprobs"] if x is not None)
                if choice.get("finish_reason"):
                    finish[i] = choice["finish_reason"]

        try:
            with self._client.stream("POST", self.url, json=payload) as resp:
                if resp.status_code >= 400:
                    body = resp.read().decode("utf-8", "replace")[:300]
                    raise BackendError(f"completion endpoint {self.url} answered HTTP {resp.status_code}: {body}")
                if "text/event-stream" in resp.headers.get("content-type", ""):
                    for line in resp.iter_lines():
                        if cancel is not None and cancel.cancelled:
                            cancelled = True
                            break
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if first_ms is None:
                            first_ms = (time.perf_counter() - start) * 1000
                        take(chunk.get("choices"))
                        usage = chunk.get("usage") or usage
                else:
                    body = json.loads(resp.read())
                    first_ms = (time.perf_counter() - start) * 1000
                    take(body.get("choices"))
                    usage = body.get("usage") or {}
        except BackendError:
            raise
        except httpx.ConnectError as exc:
            raise BackendError(f"cannot reach the completion endpoint {self.url}: {exc}. Is the server running? "
                               "(set --endpoint / aigcCode.endpoint)") from exc
        except httpx.TimeoutException as exc:
            raise BackendError(f"the completion endpoint {self.url} did not answer within {self.timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"completion endpoint {self.url} failed: {exc}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise BackendError(f"completion endpoint {self.url} sent a response that is not OpenAI completions JSON: {exc}") from exc

        stops = [s for s in request.stop if s] + _fim_stops(self.fim_format)
        candidates = []
        for i in range(n):
            text = texts[i]
            reason = {"length": "length", "stop": "stop", "eos": "eos"}.get(finish[i] or "", "stop")
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text, reason = text[:cut], "stop"
            if cancelled:
                reason = "cancelled"
            candidates.append(Candidate(text, logprobs[i], reason))
        total_ms = (time.perf_counter() - start) * 1000
        return GenerationResult(
            candidates=candidates,
            prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
            generated_tokens=int(usage.get("completion_tokens", 0) or 0) or sum(len(lp) for lp in logprobs),
            prompt_ms=first_ms if first_ms is not None else total_ms,
            total_ms=total_ms,
        )


def make_backend(kind: str = "local", model: str | None = None, adapter: str | None = None,
                 endpoint: str | None = None, device: str | None = None, fim_format: str = "starcoder",
                 api_key: str | None = None, timeout_s: float = 30.0) -> Backend:
    """Build a backend; raises ModelLoadError / BackendError with a message a user can act on."""
    if kind == "local":
        return LocalBackend(model=model, adapter=adapter, device=device)
    if kind == "openai":
        return OpenAIBackend(endpoint or "", model=model, fim_format=fim_format, api_key=api_key, timeout_s=timeout_s)
    raise BackendError(f"unknown backend {kind!r}: use 'local' or 'openai'")
