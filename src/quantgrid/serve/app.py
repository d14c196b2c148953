"""The serving HTTP API: OpenAI (``/v1/*``) and Ollama (``/api/*``) on one engine.

Both APIs turn their body into a neutral :class:`GenSpec`; :func:`open_generation`
picks the backend (local engine with an adapter, or the upstream chain) and returns a
stream of engine events; the endpoint formats the events as OpenAI JSON/SSE or Ollama
JSON/NDJSON. ``X-QuantGrid-Backend`` says who served (``local`` or ``upstream:<name>``),
``X-QuantGrid-Adapter`` which adapter (``auto`` requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from quantgrid.errors import ConfigError, NetworkError, NotFound, QuantGridError, ServerError
from quantgrid.serve import api_formats as fmt
from quantgrid.serve.deploy import Deployer, HubReleaseSource, resolve_release
from quantgrid.serve.engine import Delta, Done, Event, Failed
from quantgrid.serve.metrics import ServeMetrics
from quantgrid.serve.router import Router
from quantgrid.serve.settings import ServeSettings
from quantgrid.serve.upstream import GenSpec, UpstreamChain, prepend

log = logging.getLogger(__name__)
BACKEND_HEADER = "X-QuantGrid-Backend"
ADAPTER_HEADER = "X-QuantGrid-Adapter"


@dataclass
class ServeState:
    settings: ServeSettings
    engine: Any  # Engine | None when the local engine is off
    router: Router | None
    upstreams: UpstreamChain
    metrics: ServeMetrics
    deployer: Deployer | None = None
    started: float = field(default_factory=time.time)


@dataclass
class Generation:
    backend: str
    adapter: str | None
    events: AsyncIterator[Event]
    prompt_tokens: int = 0


def build_state(settings: ServeSettings, engine=None) -> ServeState:
    """Load the base, register adapters and the release. ``engine`` may be passed in (tests)."""
    router = deployer = None
    if settings.local_enabled:
        # Resolve the release first: a bad --release fails before the base is loaded.
        ref = source = None
        if settings.release:
            ref, source = resolve_release(settings.release, settings.hub, settings.release_cache)
        if source is None and settings.hub:  # also a fixed release directory is updated from the hub
            source = HubReleaseSource(settings.hub, settings.release_cache)
        if engine is None:
            if not settings.base:
                raise ConfigError("no base model given", hint="pass --base ID or directory")
            from quantgrid.serve.engine import Engine

            engine = Engine.from_base(settings.base, device=settings.device, dtype=settings.dtype,
                                      max_batch=settings.max_batch, max_slots=settings.max_slots,
                                      rank=settings.lora_rank)
        for name, path in settings.adapters.items():
            engine.register_adapter(name, path)
        router = Router(engine, settings.router_method, settings.router_threshold)
        if ref is not None or source is not None:
            deployer = Deployer(engine, router, source, settings.poll_interval_s)
            if ref is not None:
                deployer.deploy(ref)
    upstreams = UpstreamChain(settings.upstreams)
    return ServeState(settings, engine, router, upstreams, ServeMetrics(lambda: engine), deployer)


def create_app(settings: ServeSettings, engine=None) -> FastAPI:
    state = build_state(settings, engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.engine is not None:
            state.engine.start()
        if state.deployer is not None:
            if state.deployer.version is None:  # --hub without --release: deploy what is there now
                with contextlib.suppress(Exception):
                    await run_in_threadpool(state.deployer.check_now)
            state.deployer.start()
        yield
        if state.deployer is not None:
            state.deployer.stop()
        if state.engine is not None:
            await run_in_threadpool(state.engine.stop)
        await state.upstreams.aclose()

    app = FastAPI(title="quantgrid serve", version="1", lifespan=lifespan,
                  description="OpenAI- and Ollama-compatible serving of the quantgrid base, release and adapters.")
    app.state.qg = state
    _install_error_handlers(app)
    fmt.register_routes(app, open_generation, collect)

    @app.get("/health")
    async def health() -> dict:
        eng = state.engine
        return {"status": "ok", "local": eng is not None,
                "release": state.deployer.version if state.deployer else None,
                "engine": eng.describe() if eng is not None else None,
                "upstreams": [u.name for u in state.upstreams.upstreams],
                "uptime_s": round(time.time() - state.started, 1)}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        body, content_type = state.metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    return app


def _install_error_handlers(app: FastAPI) -> None:
    def ollama_route(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def respond(request: Request, status: int, message: str, code: str, hint: str | None = None) -> JSONResponse:
        if ollama_route(request):
            return JSONResponse({"error": message + (f" ({hint})" if hint else "")}, status_code=status)
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code,
                                       "hint": hint}}, status_code=status)

    @app.exception_handler(QuantGridError)
    async def _qg(request: Request, exc: QuantGridError):
        code = "model_not_found" if isinstance(exc, NotFound) else exc.code
        return respond(request, exc.http_status, exc.message, code, exc.hint)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = f"invalid request: {where + ': ' if where else ''}{first.get('msg', 'malformed body')}"
        return respond(request, 422, msg, "invalid_request")


# ---------------------------------------------------------------------- backends


async def open_generation(state: ServeState, spec: GenSpec) -> Generation:
    """Pick the backend for ``spec`` and start it; falls back along the chain on failure."""
    if state.engine is None:
        return await _upstream(state, spec, reason="local engine disabled")
    target = state.router.resolve(spec.model)  # 404 for an unknown name
    engine = state.engine
    ids = engine.encode_chat(spec.messages) if spec.is_chat else engine.encode(spec.prompt or "")
    engine.check_prompt(len(ids))  # 400 naming the limit
    spec.params.max_tokens = min(spec.params.max_tokens, engine.context_length - len(ids))
    adapter = target.adapter
    if target.auto:
        text = spec.prompt if not spec.is_chat else "\n".join(m["content"] for m in spec.messages)
        route = await run_in_threadpool(state.router.route, text, ids)
        state.metrics.routed.labels(adapter=route.adapter or "none").inc()
        if route.adapter is None and state.settings.auto_fallback == "upstream" and state.upstreams:
            return await _upstream(state, spec, reason="no local adapter fits")
        adapter = route.adapter or state.router.release
    events = engine.stream(ids, spec.params, adapter)
    try:
        first = await asyncio.wait_for(events.__anext__(), timeout=state.settings.local_timeout_s)
        if isinstance(first, Failed):
            raise first.error
    except Exception as e:
        await events.aclose()
        if isinstance(e, QuantGridError) and e.http_status < 500 and not isinstance(e, NetworkError):
            raise
        reason = "timed out" if isinstance(e, asyncio.TimeoutError) else f"failed: {e}"
        log.warning("local engine %s", reason)
        if not state.upstreams:
            raise ServerError(f"the local engine {reason}", hint="configure an upstream for fallback") from None
        return await _upstream(state, spec, reason=f"local engine {reason}")
    return Generation("local", adapter, prepend(first, events), len(ids))


async def _upstream(state: ServeState, spec: GenSpec, reason: str) -> Generation:
    if not state.upstreams:
        raise NetworkError(f"no upstream is configured ({reason})",
                           hint="add --upstream NAME=URL, or enable the local engine")
    name, events = await state.upstreams.open(spec)
    return Generation(f"upstream:{name}", None, events)


async def collect(gen: Generation) -> tuple[str, Done]:
    """All text and the final Done of a generation (non-streaming responses)."""
    parts: list[str] = []
    try:
        async for ev in gen.events:
            if isinstance(ev, Delta):
                parts.append(ev.text)
            elif isinstance(ev, Failed):
                raise ServerError(f"generation failed: {ev.error}")
            elif isinstance(ev, Done):
                return "".join(parts), ev
    finally:
        await gen.events.aclose()
    return "".join(parts), Done("stop", gen.prompt_tokens, len(parts))
