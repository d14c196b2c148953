"""The serving HTTP app: OpenAI (``/v1/*``) and Ollama (``/api/*``) routers on one engine.

Both APIs turn their body into a neutral :class:`GenSpec`; ``generation.open_generation``
picks the backend (local engine with an adapter, or the upstream chain) and returns a
stream of engine events; each router formats them as OpenAI JSON/SSE or Ollama
JSON/NDJSON. ``X-QuantGrid-Backend`` says who served (``local`` or ``upstream:<name>``),
``X-QuantGrid-Adapter`` which adapter (``auto`` requests). Errors take one path
(``serve.errors``) and answer in the shape of the API that was called.
"""

from __future__ import annotations

import contextlib
import time

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from quantgrid.errors import ConfigError
from quantgrid.serve import ollama_api, openai_api
from quantgrid.serve.ab import ABSplit
from quantgrid.serve.deploy import Deployer, HubReleaseSource, resolve_release
from quantgrid.serve.errors import install_error_handlers
from quantgrid.serve.feedback import FeedbackBook
from quantgrid.serve.generation import ADAPTER_HEADER, BACKEND_HEADER, ServeState, collect, open_generation
from quantgrid.serve.metrics import ServeMetrics
from quantgrid.serve.router import Router
from quantgrid.serve.security import install_cors
from quantgrid.serve.settings import ServeSettings
from quantgrid.serve.upstream import UpstreamChain

__all__ = ["ADAPTER_HEADER", "BACKEND_HEADER", "ServeState", "build_state", "collect", "create_app",
           "open_generation"]


class Health(BaseModel):
    status: str
    local: bool
    release: str | None
    engine: dict | None
    upstreams: list[str]
    uptime_s: float


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
        from quantgrid.hf_cache import resolve_local

        for name, path in settings.adapters.items():
            engine.register_adapter(name, resolve_local(path))  # hf://OWNER/NAME: from the local HF cache
        router = Router(engine, settings.router_method, settings.router_threshold)
        if ref is not None or source is not None:
            deployer = Deployer(engine, router, source, settings.poll_interval_s)
            if ref is not None:
                deployer.deploy(ref)
    upstreams = UpstreamChain(settings.upstreams)
    state = ServeState(settings, engine, router, upstreams, ServeMetrics(lambda: engine), deployer)
    state.extras["feedback"] = FeedbackBook(settings.feedback_store)
    if settings.ab:
        ab = ABSplit.parse(settings.ab, [u.name for u in settings.upstreams])
        ab.check_models(router.model_names() if router else [])
        state.extras["ab"] = ab
    if settings.context_provider:
        from quantgrid.serve.context import ContextFiller, make_provider

        state.extras["context"] = ContextFiller(make_provider(settings.context_provider))
    return state


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
    install_error_handlers(app)
    install_cors(app, settings.cors_origins)
    app.include_router(openai_api.router, tags=["openai"])
    app.include_router(ollama_api.router, tags=["ollama"])
    app.include_router(ollama_api.root, tags=["ollama"])

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        eng = state.engine
        return Health(status="ok", local=eng is not None, release=state.deployer.version if state.deployer else None,
                      engine=eng.describe() if eng is not None else None,
                      upstreams=[u.name for u in state.upstreams.upstreams],
                      uptime_s=round(time.time() - state.started, 1))

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        body, content_type = state.metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    return app
