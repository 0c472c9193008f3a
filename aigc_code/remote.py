"""The OpenAI-compatible backend: FIM prompts to a `/v1/completions` server (vLLM, TGI, llama.cpp's
llama-server or llama-cpp-python's server, Ollama), with the sampling values, token healing,
context size and `n` handling each engine needs (docs/backends.md)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

from aigc_code.budget import ApproxTokens
from aigc_code.context_fit import ContextOverflow, calibrated, fits, fraction_to_fit, overflow_from_response, shrink
from aigc_code.errors import BackendError
from aigc_code.fim_format import checkpoint_fim_format, parse_fim_format
from aigc_code.generation import CancellationToken, Candidate, GenerationConfig, GenerationResult
from aigc_code.remote_healing import heal_grammar, heuristic_heal, strip_heal

log = logging.getLogger("aigc_code.remote")


def completions_url(endpoint: str) -> str:
    """`http://host:port`, `.../v1` or `.../v1/completions` -> the completions URL."""
    url = endpoint.rstrip("/")
    if url.endswith("/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/completions"
    return url + "/v1/completions"


# Explicit sampling values, per server flavour: engines default these differently (llama.cpp:
# repeat_penalty 1.1, top_k 40, min_p 0.05; vLLM and TGI: off), so "greedy" meant different things.
NEUTRAL_SAMPLING = {
    "llama-cpp-python": {
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_k": 0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "mirostat_mode": 0,
    },
    "llama-server": {
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_k": 0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "mirostat": 0,
        "cache_prompt": True,
    },
    "vllm": {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_k": -1, "min_p": 0.0},
    "tgi": {"repetition_penalty": 1.0, "frequency_penalty": 0.0},
    "openai": {"presence_penalty": 0.0, "frequency_penalty": 0.0},
}
HEAL_KEY_CHARS = 48  # the prompt's last characters that (for pieces under half of it) decide its last token
GRAMMAR_FLAVOURS = ("llama-cpp-python", "llama-server")  # accept a GBNF `grammar` on /v1/completions
USAGE_FLAVOURS = ("vllm", "llama-server", "openai")  # stream usage when asked (stream_options)


@dataclass
class ServerInfo:
    """What the server says about itself (asked once): flavour, served model, context size."""

    flavour: str = "openai"
    model_id: str | None = None
    max_context: int | None = None
    n_native: bool = True  # honours n > 1 (False once it answered fewer choices)


def _stops_and_healing(stop: list[str], heal: str, flavour: str) -> dict:
    """The request's `stop` and healing `grammar` fields. A stop inside the healed text would end
    the output on the healed characters: the client cuts at those (`_candidate`), and a grammar
    ends the output at the one-character ones. The healed text constrains the first token(s), as
    the local engine's logit mask does; the grammar stays on for the whole completion (llama.cpp
    cannot drop it mid-way, and resuming from text would re-tokenize the healed part differently)."""
    in_heal = [s for s in stop if s and heal and s in heal]
    fields: dict = {}
    stops = [s for s in stop if s and s not in in_heal][:4]  # the OpenAI API takes at most 4
    if stops:
        fields["stop"] = stops
    if heal and flavour in GRAMMAR_FLAVOURS:
        fields["grammar"] = heal_grammar(heal, "".join(s for s in in_heal if len(s) == 1))
    return fields


class _Stream:
    """Accumulates choices of one response (streamed chunks or one JSON body)."""

    def __init__(self, n: int):
        self.texts = [""] * n
        self.logprobs: list[list[float]] = [[] for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.seen: set[int] = set()
        self.chunks = [0] * n
        self.usage: dict = {}
        self.first_ms: float | None = None
        self.cancelled = False

    def take(self, body: dict, start: float) -> None:
        if self.first_ms is None:
            self.first_ms = (time.perf_counter() - start) * 1000
        self.usage = body.get("usage") or self.usage
        for choice in body.get("choices") or []:
            i = int(choice.get("index", 0) or 0)
            if not 0 <= i < len(self.texts):
                continue
            self.seen.add(i)
            piece = choice.get("text") or ""
            self.texts[i] += piece
            self.chunks[i] += 1 if piece else 0
            lp = choice.get("logprobs") or {}
            if isinstance(lp, dict) and lp.get("token_logprobs"):
                self.logprobs[i].extend(float(x) for x in lp["token_logprobs"] if x is not None)
            if choice.get("finish_reason"):
                self.finish[i] = choice["finish_reason"]

    @property
    def empty(self) -> bool:
        return not any(self.texts) and not any(self.finish) and not self.cancelled


class OpenAIBackend:
    """POSTs FIM prompts to an OpenAI-compatible `/v1/completions` endpoint (streaming when the
    server supports it, so that cancellation takes effect between chunks).

    Asks the server once what it is (vLLM, TGI, llama.cpp's llama-server or llama-cpp-python's
    server, Ollama, other) for its context size, tokenizer and parameter dialect; heals the token
    boundary at the cursor; issues n requests when the server ignores `n`."""

    kind = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str | None = None,
        fim_format: str = "starcoder",
        api_key: str | None = None,
        timeout_s: float = 30.0,
        stream: bool = True,
        max_context: int | None = None,
        heal: bool = True,
    ):
        import httpx

        if not endpoint:
            raise BackendError(
                "the openai backend needs an endpoint: pass --endpoint URL (e.g. http://127.0.0.1:8000/v1)"
            )
        self._auto_fim = fim_format == "auto"
        self.fim = parse_fim_format("starcoder" if self._auto_fim else fim_format)  # validate early
        self.url = completions_url(endpoint)
        self.v1 = self.url.rsplit("/", 1)[0]
        self.root = self.v1[: -len("/v1")] if self.v1.endswith("/v1") else self.v1
        self.model = model
        self.timeout_s = timeout_s
        self.stream = stream
        self.heal = heal
        self.tokens: ApproxTokens = ApproxTokens()  # calibrated by the server's counts (context_fit)
        self._max_context_setting = max_context or _env_int("AIGC_CODE_MAX_CONTEXT")
        self.info: ServerInfo | None = None
        self._warned: set[str] = set()
        self.pending_warnings: list[str] = []
        self._heal_cache: dict[str, str] = {}  # last HEAL_KEY_CHARS characters -> last token's text
        headers = {"Accept": "application/json"}
        key = api_key or os.environ.get("AIGC_CODE_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)), headers=headers)

    @property
    def fim_format(self) -> str:
        return self.fim.spec

    # -- what the server is ---------------------------------------------------------------------
    @property
    def max_context(self) -> int | None:
        """Prompt + generation tokens the served model takes: the setting, else what the server says."""
        if self._max_context_setting:
            return self._max_context_setting
        return self.server().max_context

    def server(self) -> ServerInfo:
        """What the server is; asked once it answers (while it is down, asked again next time)."""
        if self.info is not None:
            return self.info
        info = self._probe()
        if info is None:
            return ServerInfo()
        self.info = info
        if self._auto_fim:
            found = checkpoint_fim_format(info.model_id) or checkpoint_fim_format(self.model)
            self.fim = parse_fim_format(found or "starcoder")
        return info

    def _get_json(self, url: str, method: str = "GET", body: dict | None = None, unreachable=None):
        """The JSON body of a 200 answer, else None; `unreachable` (returned instead) when no connection."""
        import httpx

        for attempt in range(2):
            try:
                resp = self._client.request(method, url, json=body, timeout=min(5.0, self.timeout_s))
                return resp.json() if resp.status_code == 200 else None
            except (httpx.ConnectError, httpx.ConnectTimeout):
                return unreachable
            except (httpx.RemoteProtocolError, httpx.ReadError):  # a kept-alive connection the server closed
                if attempt:
                    return None
            except Exception:  # probing only: the completion request reports a dead endpoint
                return None
        return None

    def _probe(self) -> ServerInfo | None:
        """`/v1/models` (model id; vLLM's max_model_len), then llama-server's `/props`, TGI's `/info`,
        llama-cpp-python's `/extras/tokenize`: the first that answers names the flavour. None: unreachable."""
        models = self._get_json(self.v1 + "/models", unreachable=False)
        if models is False:
            return None
        data = models.get("data") if isinstance(models, dict) else None
        entry = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        info = ServerInfo(model_id=entry.get("id") if isinstance(entry.get("id"), str) else None)
        flavour, info.max_context = self._flavour(entry)
        info.flavour = flavour
        if self.model is None:
            self.model = info.model_id
        return info

    def _flavour(self, entry: dict) -> tuple[str, int | None]:
        owner = str(entry.get("owned_by", ""))
        if owner == "vllm" or "max_model_len" in entry:
            return "vllm", _int(entry.get("max_model_len"))
        props = self._get_json(self.root + "/props")
        if isinstance(props, dict) and "default_generation_settings" in props:
            settings = props.get("default_generation_settings") or {}
            return "llama-server", _int(settings.get("n_ctx") or props.get("n_ctx"))
        tgi = self._get_json(self.root + "/info")
        if isinstance(tgi, dict) and "max_total_tokens" in tgi:
            return "tgi", _int(tgi.get("max_total_tokens"))
        if owner in ("library", "ollama"):
            return "ollama", None
        if self._get_json(self.root + "/extras/tokenize", "POST", {"input": "a"}) is not None:
            return "llama-cpp-python", None
        return "openai", None

    def check(self) -> str:
        """Ask the server for one token; raises BackendError with a clear message when it is down."""
        result = self.complete("def", "", GenerationConfig(max_new_tokens=1))
        return f"{self.describe()}: answered in {result.total_ms:.0f} ms"

    def health(self) -> tuple[bool, str]:
        """Is the endpoint answering now? (cheap: `/v1/models`, else a connection to it)."""
        import httpx

        try:
            resp = self._client.get(self.v1 + "/models", timeout=min(3.0, self.timeout_s))
        except httpx.HTTPError as exc:
            return False, f"cannot reach the completion endpoint {self.url}: {exc}. Is the server running?"
        if resp.status_code >= 500:
            return False, f"completion endpoint {self.url} answered HTTP {resp.status_code}"
        return True, self.describe()

    def describe(self) -> str:
        flavour = f", {self.info.flavour}" if self.info else ""
        return f"openai-compatible endpoint {self.url} (model {self.model or 'server default'}, FIM {self.fim_format}{flavour})"

    def close(self) -> None:
        self._client.close()

    def warn_once(self, message: str) -> None:
        """Log `message` once per backend; the LSP server passes it on to the client's log."""
        if message not in self._warned:
            self._warned.add(message)
            self.pending_warnings.append(message)
            log.warning("%s", message)

    # -- token healing --------------------------------------------------------------------------
    def _last_token(self, tail: str) -> str:
        """The text of the last token of `tail` by the server's tokenizer; without one (or when it
        does not answer), the trailing whitespace (`heuristic_heal`)."""
        ask = {
            "llama-cpp-python": self._last_token_llama_cpp_python,
            "llama-server": self._last_token_llama_server,
            "vllm": self._last_token_vllm,
            "tgi": self._last_token_tgi,
        }.get(self.server().flavour)
        piece = ask(tail) if ask is not None else None
        return piece if isinstance(piece, str) else heuristic_heal(tail)

    def _server_tokens(self, text: str) -> list | None:
        """`text` tokenized by the server's own tokenize endpoint, as that endpoint lists tokens (ids,
        or dicts with a piece or an offset); None without one or when it does not answer."""
        flavour = self.server().flavour
        if flavour == "llama-cpp-python":
            found = self._get_json(self.root + "/extras/tokenize", "POST", {"input": text})
        elif flavour == "llama-server":
            found = self._get_json(self.root + "/tokenize", "POST", {"content": text, "with_pieces": True})
        elif flavour == "vllm":
            body = {"model": self.model, "prompt": text, "add_special_tokens": False}
            found = self._get_json(self.root + "/tokenize", "POST", body)
        elif flavour == "tgi":
            found = self._get_json(self.root + "/tokenize", "POST", {"inputs": text})
        else:
            return None
        tokens = found.get("tokens") if isinstance(found, dict) else found
        return tokens if isinstance(tokens, list) and tokens else None

    def _last_token_llama_cpp_python(self, tail: str) -> str | None:
        ids = self._server_tokens(tail)
        if not ids:
            return None
        return (self._get_json(self.root + "/extras/detokenize", "POST", {"tokens": ids[-1:]}) or {}).get("text")

    def _last_token_llama_server(self, tail: str) -> str | None:
        toks = self._server_tokens(tail)
        return str(toks[-1].get("piece", "")) if toks and isinstance(toks[-1], dict) else None

    def _last_token_vllm(self, tail: str) -> str | None:
        ids = self._server_tokens(tail)
        if not ids:
            return None
        body = {"model": self.model, "tokens": ids[-1:]}
        return (self._get_json(self.root + "/detokenize", "POST", body) or {}).get("prompt")

    def _last_token_tgi(self, tail: str) -> str | None:
        toks = self._server_tokens(tail)
        if not (toks and isinstance(toks[-1], dict)):
            return None
        start = _int(toks[-1].get("start"))
        return tail[start:] if start is not None and 0 <= start < len(tail) else None

    def heal_split(self, prefix: str) -> tuple[str, str]:
        """(prefix without its last token, that token's text): the model writes the token again,
        whole, as in training, instead of continuing a token boundary it never saw."""
        if not self.heal or not prefix:
            return prefix, ""
        key = prefix[-HEAL_KEY_CHARS:]
        piece = self._heal_cache.get(key)
        if piece is None:
            piece = self._last_token(prefix[-256:])
            if len(piece) < HEAL_KEY_CHARS // 2:  # decided by the key's characters: typing reuses it
                if len(self._heal_cache) >= 512:
                    self._heal_cache.clear()
                self._heal_cache[key] = piece
        if not piece or "\ufffd" in piece or not prefix.endswith(piece):
            return prefix, ""
        if self.server().flavour not in GRAMMAR_FLAVOURS and piece.strip() and not piece[0].isspace():
            return prefix, ""  # unconstrained: only whitespace-led pieces are safe to take back
        return prefix[: -len(piece)], piece

    # -- one completion ---------------------------------------------------------------------------
    def _payload(self, prefix: str, suffix: str, request: GenerationConfig, heal: str = "") -> dict:
        prompt, suffix_field = self.fim.prompt(prefix, suffix)
        flavour = self.server().flavour
        payload: dict = {
            "prompt": prompt,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": 1.0 if request.temperature == 0 else request.top_p,
            "n": request.n,
            "stream": self.stream,
            **NEUTRAL_SAMPLING.get(flavour, NEUTRAL_SAMPLING["openai"]),
        }
        if suffix_field is not None:
            payload["suffix"] = suffix_field
        if self.model:
            payload["model"] = self.model
        payload.update(_stops_and_healing(request.stop, heal, flavour))
        if request.n > 1:
            payload["logprobs"] = 1
        if request.seed is not None:
            payload["seed"] = request.seed
        if self.stream and flavour in USAGE_FLAVOURS:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _post(self, payload: dict, n: int, cancel: CancellationToken | None, start: float) -> _Stream:
        """One completion request. A kept-alive connection that the server closed (llama-cpp-python
        drops it after a failed stream) fails before any answer: that request is sent once more."""
        import httpx

        try:
            return self._post_once(payload, n, cancel, start)
        except BackendError as exc:
            if not isinstance(exc.__cause__, (httpx.RemoteProtocolError, httpx.ReadError)):
                raise
            return self._post_once(payload, n, cancel, start)

    def _post_once(self, payload: dict, n: int, cancel: CancellationToken | None, start: float) -> _Stream:
        import httpx

        out = _Stream(n)
        try:
            with self._client.stream("POST", self.url, json=payload) as resp:
                if resp.status_code >= 400:
                    body = resp.read().decode("utf-8", "replace")[:2000]
                    overflow = overflow_from_response(resp.status_code, body, self.url)
                    if overflow is not None:
                        raise overflow
                    raise BackendError(f"completion endpoint {self.url} answered HTTP {resp.status_code}: {body[:300]}")
                if "text/event-stream" in resp.headers.get("content-type", ""):
                    self._read_events(resp, out, cancel, start)
                else:
                    out.take(json.loads(resp.read()), start)
        except httpx.ConnectError as exc:
            raise BackendError(
                f"cannot reach the completion endpoint {self.url}: {exc}. Is the server running? "
                "(set --endpoint / aigcCode.endpoint)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise BackendError(f"the completion endpoint {self.url} did not answer within {self.timeout_s:g}s") from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"completion endpoint {self.url} failed: {exc}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise BackendError(
                f"completion endpoint {self.url} sent a response that is not OpenAI completions JSON: {exc}"
            ) from exc
        return out

    @staticmethod
    def _read_events(resp, out: _Stream, cancel: CancellationToken | None, start: float) -> None:
        for line in resp.iter_lines():
            if cancel is not None and cancel.cancelled:
                out.cancelled = True
                return
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            out.take(json.loads(data), start)

    def _empty_error(self, prompt: str) -> BackendError:
        size = self.tokens.count_tokens(prompt)
        ctx = self.max_context
        return BackendError(
            f"completion endpoint {self.url} answered with no text and no finish reason: the prompt "
            f"(about {size} tokens) is probably longer than the server's context"
            + (f" ({ctx})" if ctx else "")
            + "; set the context size (AIGC_CODE_MAX_CONTEXT or the "
            "backend's max_context) to the server's, e.g. llama.cpp's --n_ctx"
        )

    def _generate(self, payload: dict, n: int, cancel: CancellationToken | None, start: float) -> list[_Stream]:
        """n choices: one request with `n`, or (for servers that ignore it) one request per choice."""
        info = self.server()
        if n == 1 or info.n_native:
            first = self._post(payload, n, cancel, start)
            got = len(first.seen)
            if n == 1 or got >= n or first.cancelled:
                return [first]
            info.n_native = False
            self.warn_once(f"the server at {self.url} returned {got} of n={n} choices: sending one request per choice")
            runs, missing = [first], range(got, n)
        else:
            runs, missing = [], range(n)
        for i in missing:
            if cancel is not None and cancel.cancelled:
                break
            one = {**payload, "n": 1}
            if "seed" in one:
                one["seed"] = one["seed"] + i
            runs.append(self._post(one, 1, cancel, start))
        return runs

    def complete(
        self, prefix: str, suffix: str, request: GenerationConfig, cancel: CancellationToken | None = None
    ) -> GenerationResult:
        start = time.perf_counter()
        self.server()  # asked once: flavour, model, context size, FIM layout ("auto")
        head, heal = self.heal_split(prefix)
        payload, runs = self._generate_fitting(head, suffix, request, heal, cancel, start)
        stops = [s for s in request.stop if s] + self.fim.stops
        candidates = [self._candidate(run, i, heal, stops) for run in runs for i in sorted(run.seen or {0})]
        return self._result(candidates[: max(1, request.n)], runs, payload["prompt"], start)

    def _generate_fitting(
        self, head: str, suffix: str, request: GenerationConfig, heal: str, cancel, start: float
    ) -> tuple[dict, list[_Stream]]:
        """Generate; when the server refuses the prompt as too long (an HTTP error that says so, or
        llama-cpp-python's empty stream), learn from its count and send the prompt once more, cut
        to fit (`aigc_code.context_fit`)."""
        n = max(1, request.n)
        payload = self._payload(head, suffix, request, heal)
        estimate, limit = self.tokens.count_tokens(payload["prompt"]), self.max_context
        if limit and not fits(estimate, limit, request.max_new_tokens):  # over by our own estimate: cut first
            head, suffix = shrink(head, suffix, fraction_to_fit(estimate, limit, request.max_new_tokens))
            payload = self._payload(head, suffix, request, heal)
        try:
            runs = self._generate(payload, n, cancel, start)
            if not all(run.empty for run in runs):
                return payload, runs
            said = ContextOverflow("empty stream")
        except ContextOverflow as exc:
            said = exc
        fraction = self._learn_overflow(payload["prompt"], said, request.max_new_tokens)
        head, suffix = shrink(head, suffix, fraction)
        payload = self._payload(head, suffix, request, heal)
        runs = self._generate(payload, n, cancel, start)  # refused again: the error reaches the user
        if all(run.empty for run in runs):
            raise self._empty_error(payload["prompt"])
        return payload, runs

    def _learn_overflow(self, prompt: str, said: ContextOverflow, max_new_tokens: int) -> float:
        """Calibrate the token estimate (and the context size, when the server named it and no
        setting did) from a refused prompt; returns the fraction of it to keep."""
        count = said.prompt_tokens or self._count_on_server(prompt)
        if said.limit and not self._max_context_setting and self.info is not None:
            self.info.max_context = said.limit
        limit = self.max_context
        # uncounted, it was still over what the context leaves beside the generation
        at_least = count or (limit - max_new_tokens + 1 if limit and limit > max_new_tokens else None)
        if at_least:
            self.tokens = calibrated(self.tokens, len(prompt), at_least)
        self.warn_once(
            f"the server at {self.url} refused a prompt as longer than its context "
            f"({count or 'unknown'} tokens by its count, context {limit or 'unknown'}): "
            f"prompts are now budgeted at {self.tokens.chars_per_token:.2f} characters a token"
        )
        return fraction_to_fit(count, limit, max_new_tokens)

    def _count_on_server(self, text: str) -> int | None:
        """The server's own token count of `text`, from its tokenize endpoint (None without one)."""
        tokens = self._server_tokens(text)
        return len(tokens) if tokens else None

    def _result(self, candidates: list[Candidate], runs: list[_Stream], prompt: str, start: float) -> GenerationResult:
        """Timings and token counts: the server's `usage` when it sends one, else counted here
        (prompt: estimated; generated: one streamed chunk or log-probability per token)."""
        total_ms = (time.perf_counter() - start) * 1000
        first = [r.first_ms for r in runs if r.first_ms is not None]
        usage = [r.usage for r in runs if r.usage]
        prompt_tokens = int(usage[0].get("prompt_tokens", 0) or 0) if usage else 0
        if prompt_tokens:  # the server's own count: budget the next prompts by it
            self.tokens = calibrated(self.tokens, len(prompt), prompt_tokens)
        generated = sum(int(u.get("completion_tokens", 0) or 0) for u in usage)
        counted = sum(max(sum(r.chunks), sum(len(lp) for lp in r.logprobs)) for r in runs)
        return GenerationResult(
            candidates=candidates,
            prompt_tokens=prompt_tokens or self.tokens.count_tokens(prompt),
            generated_tokens=generated or counted,
            prompt_ms=min(first) if first else total_ms,
            total_ms=total_ms,
        )

    @staticmethod
    def _candidate(run: _Stream, i: int, heal: str, stops: list[str]) -> Candidate:
        text = strip_heal(run.texts[i], heal)
        reason = {"length": "length", "stop": "stop", "eos": "eos"}.get(run.finish[i] or "", "stop")
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        if run.cancelled:
            reason = "cancelled"
        return Candidate(text, run.logprobs[i], reason)


def _int(value) -> int | None:
    try:
        return None if value is None or value == "" or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def _env_int(name: str) -> int | None:
    return _int(os.environ.get(name))
