"""Request bodies and response shapes of the OpenAI (/v1) and Ollama (/api) APIs.

Each endpoint: body -> GenSpec -> ``open_generation`` -> events -> the API's JSON, SSE
(OpenAI) or NDJSON (Ollama). Streams close their generation when the client goes away,
which cancels the engine request and frees its row and slot.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from quantgrid.errors import ConfigError
from quantgrid.serve.engine import Delta, Done, Failed
from quantgrid.serve.sampling import SamplingParams
from quantgrid.serve.upstream import GenSpec

# ---------------------------------------------------------------------- bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: keep the text ones
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class _OpenAISampling(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")

    def params(self, default_max: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(max_tokens=self.max_tokens or default_max, temperature=self.temperature,
                              top_p=self.top_p, seed=self.seed, stop=stop)


class CompletionRequest(_OpenAISampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions


class ChatCompletionRequest(_OpenAISampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class OllamaOptions(_Body):
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    num_predict: int | None = None
    stop: list[str] | None = None
    seed: int | None = None


class _OllamaBody(_Body):
    model: str
    stream: bool = True
    options: OllamaOptions = Field(default_factory=OllamaOptions)

    def params(self, default_max: int) -> SamplingParams:
        o = self.options
        n = o.num_predict if o.num_predict and o.num_predict > 0 else default_max
        return SamplingParams(max_tokens=n, temperature=o.temperature, top_p=o.top_p, seed=o.seed,
                              stop=list(o.stop or []))


class OllamaGenerateRequest(_OllamaBody):
    prompt: str = ""
    system: str | None = None
    raw: bool = False


class OllamaChatRequest(_OllamaBody):
    messages: list[ChatMessage] = Field(min_length=1)


# ---------------------------------------------------------------------- helpers


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _usage(done: Done) -> dict[str, int]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def _headers(gen) -> dict[str, str]:
    h = {"X-QuantGrid-Backend": gen.backend}
    if gen.adapter:
        h["X-QuantGrid-Adapter"] = gen.adapter
    return h


def _finish(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


def register_routes(app: FastAPI, open_generation: Callable[..., Awaitable[Any]],
                    collect: Callable[..., Awaitable[tuple[str, Done]]]) -> None:
    """Add the /v1 and /api endpoints to ``app``."""

    def state(request: Request):
        return request.app.state.qg

    async def start(request: Request, api: str, spec: GenSpec):
        st = state(request)
        try:
            return await open_generation(st, spec)
        except Exception as e:
            st.metrics.errors.labels(api=api, status=str(getattr(e, "http_status", 500))).inc()
            raise

    def observe(request: Request, api: str, gen, t0: float) -> None:
        m = state(request).metrics
        m.requests.labels(api=api, backend=gen.backend.split(":")[0]).inc()
        m.latency.labels(api=api, backend=gen.backend.split(":")[0]).observe(time.perf_counter() - t0)

    async def stream_events(request: Request, api: str, gen, t0: float,
                            fmt: Callable[[Any], list[str]]) -> AsyncIterator[str]:
        try:
            async for ev in gen.events:
                for line in fmt(ev):
                    yield line
                if isinstance(ev, Failed):
                    return
        finally:
            await gen.events.aclose()  # a client gone mid-stream cancels the request here
            observe(request, api, gen, t0)

    # ------------------------------------------------------------------ OpenAI

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        st = state(request)
        names = st.router.model_names() if st.router else []
        return {"object": "list", "data": [{"id": n, "object": "model", "created": int(st.started),
                                            "owned_by": "quantgrid"} for n in names]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        t0 = time.perf_counter()
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ConfigError("send one prompt per request", hint="make one call per prompt; they are batched")
        spec = GenSpec(body.model, body.params(16), prompt=prompts[0])
        gen = await start(request, "openai", spec)
        rid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(text: str, finish: str | None, usage: dict | None = None) -> dict:
            out = {"id": rid, "object": "text_completion", "created": created, "model": body.model,
                   "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}
            if usage is not None:
                out["usage"] = usage
            return out

        if not body.stream:
            text, done = await collect(gen)
            observe(request, "openai", gen, t0)
            return JSONResponse(chunk(text, _finish(done.finish_reason), _usage(done)), headers=_headers(gen))
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def fmt(ev) -> list[str]:
            if isinstance(ev, Delta):
                return [_sse(chunk(ev.text, None))]
            if isinstance(ev, Failed):
                return [_sse({"error": {"message": str(ev.error), "type": "server_error"}}), "data: [DONE]\n\n"]
            lines = [_sse(chunk("", _finish(ev.finish_reason)))]
            if include_usage:
                lines.append(_sse({**chunk("", None), "choices": [], "usage": _usage(ev)}))
            return lines + ["data: [DONE]\n\n"]

        return StreamingResponse(stream_events(request, "openai", gen, t0, fmt), media_type="text/event-stream",
                                 headers=_headers(gen))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        t0 = time.perf_counter()
        st = state(request)
        params = body.params(st.settings.default_max_tokens)
        if body.max_completion_tokens:
            params.max_tokens = body.max_completion_tokens
        spec = GenSpec(body.model, params, messages=[{"role": m.role, "content": m.text()} for m in body.messages])
        gen = await start(request, "openai", spec)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(delta: dict, finish: str | None) -> dict:
            return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

        if not body.stream:
            text, done = await collect(gen)
            observe(request, "openai", gen, t0)
            return JSONResponse(
                {"id": rid, "object": "chat.completion", "created": created, "model": body.model,
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": _finish(done.finish_reason), "logprobs": None}],
                 "usage": _usage(done)}, headers=_headers(gen))
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        first = [True]

        def fmt(ev) -> list[str]:
            if isinstance(ev, Delta):
                delta = {"role": "assistant", "content": ev.text} if first[0] else {"content": ev.text}
                first[0] = False
                return [_sse(chunk(delta, None))]
            if isinstance(ev, Failed):
                return [_sse({"error": {"message": str(ev.error), "type": "server_error"}}), "data: [DONE]\n\n"]
            lines = [_sse(chunk({}, _finish(ev.finish_reason)))]
            if include_usage:
                lines.append(_sse({**chunk({}, None), "choices": [], "usage": _usage(ev)}))
            return lines + ["data: [DONE]\n\n"]

        return StreamingResponse(stream_events(request, "openai", gen, t0, fmt), media_type="text/event-stream",
                                 headers=_headers(gen))

    # ------------------------------------------------------------------ Ollama

    @app.get("/api/tags")
    async def tags(request: Request) -> dict:
        st = state(request)
        names = [n for n in (st.router.model_names() if st.router else [])]
        modified = datetime.fromtimestamp(st.started, timezone.utc).isoformat()
        return {"models": [{"name": n, "model": n, "modified_at": modified, "size": 0,
                            "digest": uuid.uuid5(uuid.NAMESPACE_URL, n).hex,
                            "details": {"format": "safetensors", "family": "llama", "parameter_size": "",
                                        "quantization_level": "none"}} for n in names]}

    def ollama_final(model: str, done: Done, t0: float, **extra) -> dict:
        return {"model": model, "created_at": _now_iso(), **extra, "done": True,
                "done_reason": _finish(done.finish_reason), "total_duration": int((time.perf_counter() - t0) * 1e9),
                "prompt_eval_count": done.prompt_tokens, "eval_count": done.completion_tokens}

    async def ollama_respond(request: Request, body: _OllamaBody, spec: GenSpec, chat: bool):
        t0 = time.perf_counter()
        gen = await start(request, "ollama", spec)

        def piece(text: str) -> dict:
            return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}

        if not body.stream:
            text, done = await collect(gen)
            observe(request, "ollama", gen, t0)
            return JSONResponse(ollama_final(body.model, done, t0, **piece(text)), headers=_headers(gen))

        def fmt(ev) -> list[str]:
            if isinstance(ev, Delta):
                return [json.dumps({"model": body.model, "created_at": _now_iso(), **piece(ev.text),
                                    "done": False}) + "\n"]
            if isinstance(ev, Failed):
                return [json.dumps({"error": str(ev.error)}) + "\n"]
            return [json.dumps(ollama_final(body.model, ev, t0, **piece(""))) + "\n"]

        return StreamingResponse(stream_events(request, "ollama", gen, t0, fmt), media_type="application/x-ndjson",
                                 headers=_headers(gen))

    @app.post("/api/generate")
    async def ollama_generate(body: OllamaGenerateRequest, request: Request):
        params = body.params(state(request).settings.default_max_tokens)
        if body.raw:
            spec = GenSpec(body.model, params, prompt=body.prompt)
        else:  # like Ollama: the model's template wraps the prompt
            msgs = ([{"role": "system", "content": body.system}] if body.system else [])
            spec = GenSpec(body.model, params, messages=msgs + [{"role": "user", "content": body.prompt}])
        return await ollama_respond(request, body, spec, chat=False)

    @app.post("/api/chat")
    async def ollama_chat(body: OllamaChatRequest, request: Request):
        params = body.params(state(request).settings.default_max_tokens)
        spec = GenSpec(body.model, params, messages=[{"role": m.role, "content": m.text()} for m in body.messages])
        return await ollama_respond(request, body, spec, chat=True)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"
