"""The fallback chain: ordered OpenAI-compatible upstreams (another quantgrid server,
OpenAI, Anthropic's or Gemini's OpenAI-compatible endpoints...).

Every request is sent to upstreams as a streaming OpenAI call through the ``openai`` SDK
(its SSE parser, retries and typed errors), whatever API the client used, and comes back
as the engine's own events (Delta / Done), so the API layer formats local and upstream
answers the same way. An upstream that fails before its first token is skipped for the
next one; API keys are read from environment variables at call time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, Field

from quantgrid.errors import NetworkError
from quantgrid.serve.events import Delta, Done, Event, TokenLogprob

if TYPE_CHECKING:
    from quantgrid.serve.sampling import SamplingParams


class UpstreamConfig(BaseModel):
    """One upstream: ``base_url`` ends in /v1 (e.g. https://api.openai.com/v1)."""

    name: str
    base_url: str
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    model: str | None = Field(None, description="model name to ask for; default: the client's model name")
    timeout_s: float = Field(60.0, gt=0, description="seconds for one upstream call")
    max_retries: int = Field(1, ge=0, le=10, description="retries of a failed connection or a 429/5xx answer")

    @classmethod
    def parse_spec(cls, spec: str) -> UpstreamConfig:
        """``NAME=URL[,key_env=VAR][,model=M][,retries=N][,timeout=S]`` from the command line."""
        head, *opts = spec.split(",")
        name, sep, url = head.partition("=")
        if not sep or not url:
            raise ValueError(f"upstream {spec!r} is not NAME=URL[,key_env=VAR][,model=M][,retries=N][,timeout=S]")
        aliases = {"key_env": "api_key_env", "retries": "max_retries", "timeout": "timeout_s"}
        kw: dict[str, str] = {}
        for o in opts:
            k, _, v = o.partition("=")
            kw[aliases.get(k.strip(), k.strip())] = v.strip()
        return cls(name=name.strip(), base_url=url.strip().rstrip("/"), **kw)


@dataclass
class GenSpec:
    """A generation request in neutral form: chat messages or a raw prompt, plus sampling."""

    model: str
    params: SamplingParams
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


def openai_kwargs(spec: GenSpec, model: str) -> dict[str, Any]:
    """The SDK call's arguments for ``spec`` (always streaming, with usage)."""
    p = spec.params
    kw: dict[str, Any] = {"model": model, "stream": True, "max_tokens": p.max_tokens, "temperature": p.temperature,
                          "top_p": p.top_p, "stream_options": {"include_usage": True}}
    if p.stop:
        kw["stop"] = p.stop
    if p.seed is not None:
        kw["seed"] = p.seed
    if spec.is_chat:
        kw["messages"] = spec.messages
        if p.logprobs is not None:
            kw.update(logprobs=True, top_logprobs=p.logprobs)
    else:
        kw["prompt"] = spec.prompt
        if p.logprobs is not None:
            kw["logprobs"] = p.logprobs
    return kw


def _chat_logprobs(choice: Any) -> list[TokenLogprob] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [TokenLogprob(t.token, t.logprob, [(a.token, a.logprob) for a in t.top_logprobs or []])
            for t in content]


def _completion_logprobs(choice: Any) -> list[TokenLogprob] | None:
    lp = getattr(choice, "logprobs", None)
    if lp is None or not lp.tokens:
        return None
    tops = lp.top_logprobs or [{}] * len(lp.tokens)
    return [TokenLogprob(t, float(v or 0.0), sorted(((k, float(x)) for k, x in (top or {}).items()),
                                                    key=lambda kv: -kv[1]))
            for t, v, top in zip(lp.tokens, lp.token_logprobs or [0.0] * len(lp.tokens), tops, strict=False)]


def _describe(e: Exception) -> str:
    import openai

    if isinstance(e, openai.APIStatusError):
        return f"HTTP {e.status_code}: {e.message}"[:300]
    if isinstance(e, openai.APITimeoutError):
        return "timed out"
    if isinstance(e, openai.APIConnectionError):
        return f"cannot connect ({e.__cause__ or e})"
    return str(e)


class UpstreamChain:
    def __init__(self, upstreams: list[UpstreamConfig], client: httpx.AsyncClient | None = None):
        self.upstreams = upstreams
        self.client = client or httpx.AsyncClient()  # shared by the SDK clients (tests swap the transport)

    def __bool__(self) -> bool:
        return bool(self.upstreams)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def open(self, spec: GenSpec, only: str | None = None) -> tuple[str, AsyncIterator[Event]]:
        """(upstream name, events) from the first upstream that starts answering (or ``only`` that one)."""
        errors = []
        for up in self.upstreams:
            if only is not None and up.name != only:
                continue
            stream = self._stream(up, spec)
            try:
                first = await stream.__anext__()
            except Exception as e:  # any failure before the first token: try the next one
                await stream.aclose()
                errors.append(f"{up.name}: {_describe(e)}")
                continue
            return up.name, prepend(first, stream)
        raise NetworkError("every upstream failed: " + "; ".join(errors) if errors else "no upstream is configured",
                           hint="check the upstream URLs and their API key variables, or enable the local engine")

    def sdk_client(self, up: UpstreamConfig):
        import openai

        key = "unused"
        if up.api_key_env:
            key = os.environ.get(up.api_key_env) or ""
            if not key:
                raise NetworkError(f"environment variable {up.api_key_env} is not set",
                                   hint=f"export {up.api_key_env}=... before starting the server")
        return openai.AsyncOpenAI(base_url=up.base_url, api_key=key, max_retries=up.max_retries,
                                  timeout=up.timeout_s, http_client=self.client)

    async def _stream(self, up: UpstreamConfig, spec: GenSpec) -> AsyncIterator[Event]:
        client = self.sdk_client(up)
        kw = openai_kwargs(spec, up.model or spec.model)
        api = client.chat.completions if spec.is_chat else client.completions
        stream = await api.create(**kw)
        finish, usage, n = "stop", None, 0
        try:
            async for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices or []:
                    if spec.is_chat:
                        text, lps = (choice.delta.content if choice.delta else None), _chat_logprobs(choice)
                    else:
                        text, lps = choice.text, _completion_logprobs(choice)
                    if text or lps:
                        n += 1
                        yield Delta(text or "", lps)
                    finish = choice.finish_reason or finish
        finally:
            await stream.close()
        yield Done(finish, int(usage.prompt_tokens if usage else 0),
                   int(usage.completion_tokens if usage else n))


async def prepend(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        yield first
        async for ev in rest:
            yield ev
    finally:
        await rest.aclose()
