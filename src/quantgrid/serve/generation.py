"""Choosing a backend for a request and running it: the part both APIs share.

An endpoint turns its body into a neutral :class:`GenSpec`; :func:`open_generation`
picks the backend (the local engine with an adapter, or the upstream chain), waits for
the first event and returns a :class:`Generation` whose events the endpoint formats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi.concurrency import run_in_threadpool

from quantgrid.errors import NetworkError, QuantGridError, ServerError
from quantgrid.serve.ab import ARM_HEADER, SPLIT_MODELS, ABSplit
from quantgrid.serve.events import Delta, Done, Event, Failed, TokenLogprob
from quantgrid.serve.feedback import Exchange, FeedbackBook
from quantgrid.serve.upstream import GenSpec, UpstreamChain, prepend

if TYPE_CHECKING:
    from quantgrid.serve.deploy import Deployer
    from quantgrid.serve.metrics import ServeMetrics
    from quantgrid.serve.router import Router
    from quantgrid.serve.settings import ServeSettings

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
    extras: dict[str, Any] = field(default_factory=dict)  # optional services (A/B, feedback, context)


@dataclass
class Generation:
    backend: str
    adapter: str | None
    events: AsyncIterator[Event]
    prompt_tokens: int = 0
    # perf_counter times: request start, backend chosen and submitted, first event.
    t_start: float = 0.0
    t_submit: float = 0.0
    t_first: float = 0.0
    arm: str | None = None  # the A/B arm that served it

    def headers(self) -> dict[str, str]:
        h = {BACKEND_HEADER: self.backend}
        if self.adapter:
            h[ADAPTER_HEADER] = self.adapter
        if self.arm:
            h[ARM_HEADER] = self.arm
        return h


@dataclass
class Collected:
    """A whole generation: its text, its final event and, if asked for, its tokens' logprobs."""

    text: str
    done: Done
    logprobs: list[TokenLogprob] | None
    t_end: float


async def open_generation(state: ServeState, spec: GenSpec) -> Generation:
    """Pick the backend for ``spec`` and start it; falls back along the chain on failure.

    With an A/B split, a ``quantgrid`` request first gets its arm (a served model name or
    one upstream); with a context provider, placeholders in the answer are filled."""
    t0 = time.perf_counter()
    ab: ABSplit | None = state.extras.get("ab")
    arm = None
    if ab is not None and spec.model in SPLIT_MODELS:
        arm = ab.pick(spec.extra.get("user"))
        if arm.upstream is not None:
            gen = await _upstream(state, spec, reason="A/B arm", only=arm.upstream)
        else:
            spec.model = arm.name
            gen = await _open(state, spec)
        gen.arm = arm.name
    else:
        gen = await _open(state, spec)
    gen.t_start, gen.t_first = t0, time.perf_counter()
    gen.t_submit = gen.t_submit or t0
    filler = state.extras.get("context")
    if filler is not None:
        gen.events = filler.wrap(gen.events, question_of(spec))
    return gen


def question_of(spec: GenSpec) -> str:
    """The user's question: the last user turn of a chat, or the raw prompt."""
    if not spec.is_chat:
        return spec.prompt or ""
    return next((m["content"] for m in reversed(spec.messages) if m["role"] == "user"), "")


async def _open(state: ServeState, spec: GenSpec) -> Generation:
    if state.engine is None:
        return await _upstream(state, spec, reason="local engine disabled")
    target = state.router.resolve(spec.model)  # 404 for an unknown name
    engine = state.engine
    adapter = target.adapter
    if target.auto:  # route on the question, then encode with the chosen adapter's training prompt
        text = question_of(spec)
        engine.check_prompt_size(len(text or ""))
        route = await run_in_threadpool(state.router.route, text)
        state.metrics.routed.labels(adapter=route.adapter or "none").inc()
        if route.adapter is None and state.settings.auto_fallback == "upstream" and state.upstreams:
            return await _upstream(state, spec, reason="no local adapter fits")
        adapter = route.adapter or state.router.release
    # Off the event loop, size-limited (413), context-checked (400).
    ids = await engine.aencode(messages=spec.messages, prompt=spec.prompt, adapter=adapter)
    spec.params.max_tokens = min(spec.params.max_tokens, engine.context_length - len(ids))
    t_submit = time.perf_counter()
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
    return Generation("local", adapter, prepend(first, events), len(ids), t_submit=t_submit)


async def _upstream(state: ServeState, spec: GenSpec, reason: str, only: str | None = None) -> Generation:
    if not state.upstreams:
        raise NetworkError(f"no upstream is configured ({reason})",
                           hint="add --upstream NAME=URL, or enable the local engine")
    t_submit = time.perf_counter()
    name, events = await state.upstreams.open(spec, only=only)
    return Generation(f"upstream:{name}", None, events, t_submit=t_submit)


async def collect(gen: Generation) -> Collected:
    """All text and the final Done of a generation (non-streaming responses)."""
    parts: list[str] = []
    lps: list[TokenLogprob] | None = None
    done: Done | None = None
    try:
        async for ev in gen.events:
            if isinstance(ev, Delta):
                parts.append(ev.text)
                if ev.logprobs is not None:
                    lps = (lps or []) + ev.logprobs
            elif isinstance(ev, Failed):
                raise ServerError(f"generation failed: {ev.error}")
            elif isinstance(ev, Done):
                done = ev
                break
    finally:
        await gen.events.aclose()
    done = done or Done("stop", gen.prompt_tokens, len(parts))
    return Collected("".join(parts), done, lps, time.perf_counter())


async def merge(gens: list[Generation]) -> AsyncIterator[tuple[int, Event]]:
    """Events of several generations as (index, event), in arrival order (``n`` > 1 streams)."""
    if len(gens) == 1:
        async for ev in gens[0].events:
            yield 0, ev
        return
    queue: asyncio.Queue[tuple[int, Event | None]] = asyncio.Queue()

    async def pump(i: int, g: Generation) -> None:
        try:
            async for ev in g.events:
                await queue.put((i, ev))
        except Exception as e:  # surfaces as that choice's failure
            await queue.put((i, Failed(e)))
        finally:
            await queue.put((i, None))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    open_ = len(tasks)
    try:
        while open_:
            i, ev = await queue.get()
            if ev is None:
                open_ -= 1
                continue
            yield i, ev
    finally:
        await cancel_and_wait(tasks)  # a generator can be closed only once nothing iterates it
        for g in gens:
            await g.events.aclose()


async def cancel_and_wait(tasks: list[asyncio.Future]) -> None:
    """Cancel ``tasks`` and wait until they have stopped (their results and errors dropped)."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def make_params(**kw: Any):
    """SamplingParams from an API body's fields (imported here: the sampling module needs torch)."""
    from quantgrid.serve.sampling import SamplingParams

    return SamplingParams(**kw)


def observe(state: ServeState, api: str, gen: Generation, done: Done | None) -> None:
    """Count a finished request in /metrics."""
    m = state.metrics
    backend = gen.backend.split(":")[0]
    m.requests.labels(api=api, backend=backend).inc()
    m.latency.labels(api=api, backend=backend).observe(time.perf_counter() - gen.t_start)
    if done is not None:
        m.tokens.labels(api=api, backend=backend, kind="prompt").inc(done.prompt_tokens)
        m.tokens.labels(api=api, backend=backend, kind="completion").inc(done.completion_tokens)
    if gen.arm is not None:
        m.ab_requests.labels(arm=gen.arm).inc()
        m.ab_latency.labels(arm=gen.arm).observe(time.perf_counter() - gen.t_start)
        if done is not None:
            m.ab_tokens.labels(arm=gen.arm).inc(done.completion_tokens)


def remember(state: ServeState, rid: str, spec: GenSpec, gens: list[Generation], answers: list[str]) -> None:
    """Keep a finished exchange (in memory) so that it can be rated by its id."""
    book: FeedbackBook | None = state.extras.get("feedback")
    if book is None or not gens:
        return
    g = gens[0]
    book.remember(Exchange(id=rid, created=time.time(), model=spec.model, backend=g.backend, adapter=g.adapter,
                           arm=g.arm, messages=spec.messages, prompt=None if spec.is_chat else spec.prompt,
                           answers=answers))


async def start(state: ServeState, api: str, spec: GenSpec) -> Generation:
    """open_generation, counting a failure to start in /metrics."""
    try:
        return await open_generation(state, spec)
    except Exception as e:
        state.metrics.errors.labels(api=api, status=str(getattr(e, "http_status", 500))).inc()
        raise
