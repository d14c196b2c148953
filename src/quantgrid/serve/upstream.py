"""The fallback chain: ordered OpenAI-compatible upstreams (another quantgrid server,
OpenAI, Anthropic's or Gemini's OpenAI-compatible endpoints...).

Every request is sent to upstreams as a streaming OpenAI call, whatever API the client
used, and comes back as the engine's own events (Delta / Done), so the API layer formats
local and upstream answers the same way. An upstream that fails before its first token
is skipped for the next one; API keys are read from environment variables at call time.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, Field

from quantgrid.errors import NetworkError
from quantgrid.serve.engine import Delta, Done, Event
from quantgrid.serve.sampling import SamplingParams


class UpstreamConfig(BaseModel):
    """One upstream: ``base_url`` ends in /v1 (e.g. https://api.openai.com/v1)."""

    name: str
    base_url: str
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    model: str | None = Field(None, description="model name to ask for; default: the client's model name")
    timeout_s: float = 60.0

    @classmethod
    def parse_spec(cls, spec: str) -> UpstreamConfig:
        """``NAME=URL[,key_env=VAR][,model=M]`` from the command line."""
        head, *opts = spec.split(",")
        name, sep, url = head.partition("=")
        if not sep or not url:
            raise ValueError(f"upstream {spec!r} is not NAME=URL[,key_env=VAR][,model=M]")
        kw: dict[str, str] = {}
        for o in opts:
            k, _, v = o.partition("=")
            kw[{"key_env": "api_key_env"}.get(k.strip(), k.strip())] = v.strip()
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


def openai_body(spec: GenSpec, model: str) -> dict:
    p = spec.params
    body: dict = {"model": model, "stream": True, "max_tokens": p.max_tokens, "temperature": p.temperature,
                  "top_p": p.top_p, "stream_options": {"include_usage": True}}
    if p.stop:
        body["stop"] = p.stop
    if p.seed is not None:
        body["seed"] = p.seed
    if spec.is_chat:
        body["messages"] = spec.messages
    else:
        body["prompt"] = spec.prompt
    return body


async def _sse_events(resp: httpx.Response) -> AsyncIterator[dict]:
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


class UpstreamChain:
    def __init__(self, upstreams: list[UpstreamConfig], client: httpx.AsyncClient | None = None):
        self.upstreams = upstreams
        self.client = client or httpx.AsyncClient()

    def __bool__(self) -> bool:
        return bool(self.upstreams)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def open(self, spec: GenSpec) -> tuple[str, AsyncIterator[Event]]:
        """(upstream name, events) from the first upstream that starts answering."""
        errors = []
        for up in self.upstreams:
            stream = self._stream(up, spec)
            try:
                first = await stream.__anext__()
            except Exception as e:  # any failure before the first token: try the next one
                await stream.aclose()
                errors.append(f"{up.name}: {e}")
                continue
            return up.name, prepend(first, stream)
        raise NetworkError("every upstream failed: " + "; ".join(errors) if errors else "no upstream is configured",
                           hint="check the upstream URLs and their API key variables, or enable the local engine")

    async def _stream(self, up: UpstreamConfig, spec: GenSpec) -> AsyncIterator[Event]:
        headers = {}
        if up.api_key_env:
            key = os.environ.get(up.api_key_env)
            if not key:
                raise NetworkError(f"environment variable {up.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        path = "/chat/completions" if spec.is_chat else "/completions"
        body = openai_body(spec, up.model or spec.model)
        async with self.client.stream("POST", up.base_url + path, json=body, headers=headers,
                                      timeout=up.timeout_s) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:200]
                raise NetworkError(f"HTTP {resp.status_code}: {text}")
            finish, usage, n = "stop", {}, 0
            async for chunk in _sse_events(resp):
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") if spec.is_chat else choice.get("text")
                    if text:
                        n += 1
                        yield Delta(text)
                    finish = choice.get("finish_reason") or finish
            yield Done(finish, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", n)))


async def prepend(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        yield first
        async for ev in rest:
            yield ev
    finally:
        await rest.aclose()
