"""The OpenAI API (``/v1/*``): models, completions, chat completions, embeddings.

Each generation endpoint: body -> refusals (400 naming an unsupported field) -> one
GenSpec per choice (``n``) -> backends -> OpenAI JSON, or server-sent events when
``stream`` is true. Streams close their generations when the client goes away, which
cancels the engine rows; a non-streaming request whose client disconnects is cancelled
too (see :func:`collect_all`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from quantgrid.errors import NotFound
from quantgrid.serve import openai_types as T
from quantgrid.serve.ab import USER_HEADER
from quantgrid.serve.errors import UnsupportedParameter, json_body
from quantgrid.serve.events import Delta, Done, Failed, TokenLogprob
from quantgrid.serve.feedback import REQUEST_ID_HEADER, FeedbackReceipt, FeedbackRequest
from quantgrid.serve.generation import (
    Collected,
    Generation,
    ServeState,
    cancel_and_wait,
    collect,
    merge,
    observe,
    remember,
    start,
)
from quantgrid.serve.security import require_api_key
from quantgrid.serve.upstream import GenSpec

router = APIRouter(dependencies=[Depends(require_api_key)])


def get_state(request: Request) -> ServeState:
    return request.app.state.qg


def user_of(request: Request, body_user: str | None = None) -> str | None:
    """The end-user id an A/B arm sticks to: the header, else the body's ``user``."""
    return request.headers.get(USER_HEADER) or body_user


def finish(reason: str) -> str:
    return reason if reason in ("stop", "length") else "stop"


# ---------------------------------------------------------------------- logprobs


def chat_logprobs(lps: list[TokenLogprob] | None, k: int) -> T.ChatLogprobs | None:
    if lps is None:
        return None
    return T.ChatLogprobs(content=[
        T.TokenLogprobOut(token=t.token, logprob=t.logprob, bytes=list(t.token.encode()),
                          top_logprobs=[T.TopLogprob(token=a, logprob=v, bytes=list(a.encode())) for a, v in t.top[:k]])
        for t in lps])


def completion_logprobs(lps: list[TokenLogprob] | None, k: int, offset: int = 0) -> T.CompletionLogprobs | None:
    if lps is None:
        return None
    offsets, pos = [], offset
    for t in lps:
        offsets.append(pos)
        pos += len(t.token)
    tops = []
    for t in lps:
        d: dict[str, float] = {}
        for a, v in t.top[:k]:
            d.setdefault(a, v)
        tops.append(d)
    return T.CompletionLogprobs(tokens=[t.token for t in lps], token_logprobs=[t.logprob for t in lps],
                                top_logprobs=tops, text_offset=offsets)


# ---------------------------------------------------------------------- running n choices


def with_seed(spec: GenSpec, i: int) -> GenSpec:
    """Choice ``i``'s copy of ``spec``: a seeded request gives each choice its own seed."""
    params = dataclasses.replace(spec.params, stop=list(spec.params.stop))
    if params.seed is not None:
        params.seed = params.seed + i
    return dataclasses.replace(spec, params=params)


async def open_choices(state: ServeState, api: str, spec: GenSpec, n: int) -> list[Generation]:
    gens: list[Generation] = []
    try:
        for i in range(n):  # in turn: the first choice's errors (404, 400) come back as they are
            gens.append(await start(state, api, with_seed(spec, i)))
    except BaseException:
        for g in gens:
            await g.events.aclose()
        raise
    return gens


async def collect_all(request: Request, gens: list[Generation]) -> list[Collected]:
    """Collect every choice; a client that disconnects meanwhile cancels them (rows freed)."""
    task = asyncio.ensure_future(asyncio.gather(*(collect(g) for g in gens)))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnect  # answered quietly (errors.py): nobody is there to read it
    finally:
        await cancel_and_wait([task])  # a generator can be closed only once nothing iterates it
        for g in gens:
            await g.events.aclose()


async def collect_finished(request: Request, state: ServeState, api: str, rid: str, spec: GenSpec,
                           gens: list[Generation]) -> list[Collected]:
    """collect_all for a non-streaming answer, then count it in /metrics and keep it for feedback."""
    results = await collect_all(request, gens)
    for g, r in zip(gens, results, strict=True):
        observe(state, api, g, r.done)
    remember(state, rid, spec, gens, [r.text for r in results])
    return results


def sse(obj) -> str:
    data = obj.model_dump_json() if hasattr(obj, "model_dump_json") else json.dumps(obj)
    return f"data: {data}\n\n"


async def stream_choices(state: ServeState, gens: list[Generation], on_delta: Callable[[int, Delta], str | None],
                         on_done: Callable[[int, Done], str], usage_chunk: Callable[[T.Usage], str] | None,
                         on_complete: Callable[[list[str]], None]) -> AsyncIterator[str]:
    dones: dict[int, Done] = {}
    texts = [""] * len(gens)
    events = merge(gens)
    try:
        async for i, ev in events:
            if isinstance(ev, Delta):
                texts[i] += ev.text
                line = on_delta(i, ev)
                if line:
                    yield line
            elif isinstance(ev, Failed):
                yield sse({"error": {"message": f"generation failed: {ev.error}", "type": "server_error",
                                     "param": None, "code": "server_error"}})
                yield "data: [DONE]\n\n"
                return
            else:
                dones[i] = ev
                yield on_done(i, ev)
        if usage_chunk is not None:
            prompt = dones[0].prompt_tokens if 0 in dones else 0
            yield usage_chunk(T.Usage.of(prompt, sum(d.completion_tokens for d in dones.values())))
        on_complete(texts)
        yield "data: [DONE]\n\n"
    finally:
        await events.aclose()  # a client gone mid-stream cancels the rows here
        for i, g in enumerate(gens):
            await g.events.aclose()
            observe(state, "openai", g, dones.get(i))


def usage_of(results: list[Collected]) -> T.Usage:
    return T.Usage.of(results[0].done.prompt_tokens, sum(r.done.completion_tokens for r in results))


@dataclasses.dataclass
class Reply:
    """The started choices of one generation request, and what its response carries: the id
    (also the key feedback names it by), the creation time and the headers."""

    spec: GenSpec
    gens: list[Generation]
    rid: str
    created: int
    headers: dict[str, str]

    @classmethod
    async def start(cls, state: ServeState, spec: GenSpec, n: int, prefix: str) -> Reply:
        gens = await open_choices(state, "openai", spec, n)
        rid = f"{prefix}-{uuid.uuid4().hex[:24]}"
        return cls(spec, gens, rid, int(time.time()), {**gens[0].headers(), REQUEST_ID_HEADER: rid})

    async def finished(self, request: Request, state: ServeState, response: type[T.Completion | T.ChatCompletion],
                       choice: Callable[[int, Collected], T.CompletionChoice | T.ChatChoice]) -> JSONResponse:
        """The non-streaming answer: every choice collected to its end, as one ``response``."""
        results = await collect_finished(request, state, "openai", self.rid, self.spec, self.gens)
        out = response(id=self.rid, created=self.created, model=self.spec.model, usage=usage_of(results),
                       choices=[choice(i, r) for i, r in enumerate(results)])
        return JSONResponse(out.model_dump(mode="json"), headers=self.headers)


# ---------------------------------------------------------------------- routes


@router.get("/v1/models", response_model=T.ModelList)
async def list_models(state: ServeState = Depends(get_state)) -> T.ModelList:
    names = state.router.model_names() if state.router else []
    return T.ModelList(data=[T.Model(id=n, created=int(state.started)) for n in names])


@router.get("/v1/models/{model_id}", response_model=T.Model)
async def retrieve_model(model_id: str, state: ServeState = Depends(get_state)) -> T.Model:
    if state.router is None:
        raise NotFound(f"The model '{model_id}' does not exist", hint="the local engine is off; see the upstreams")
    state.router.resolve(model_id)  # 404 naming the valid ones
    return T.Model(id=model_id, created=int(state.started))


@router.post("/v1/completions", response_model=T.Completion)
async def completions(request: Request, body: T.CompletionRequest = Depends(json_body(T.CompletionRequest)),
                      state: ServeState = Depends(get_state)):
    body.refusals()
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    k = body.logprobs
    spec = GenSpec(body.model, body.params(16, k), prompt=prompt, extra={"user": user_of(request, body.user)})
    reply = await Reply.start(state, spec, body.n, "cmpl")
    if not body.stream:
        return await reply.finished(request, state, T.Completion, lambda i, r: T.CompletionChoice(
            index=i, text=r.text, finish_reason=finish(r.done.finish_reason),
            logprobs=completion_logprobs(r.logprobs, k or 0)))
    gens, rid, created = reply.gens, reply.rid, reply.created
    offsets = [0] * body.n

    def chunk(i: int, text: str, reason: str | None, lps=None) -> str:
        c = T.Completion(id=rid, created=created, model=body.model, choices=[
            T.CompletionChoice(index=i, text=text, finish_reason=reason, logprobs=lps)])
        return sse(c.model_dump(exclude={"usage"}, mode="json"))

    def on_delta(i: int, ev: Delta) -> str:
        lps = completion_logprobs(ev.logprobs, k or 0, offsets[i])
        offsets[i] += len(ev.text)
        return chunk(i, ev.text, None, lps)

    def on_usage(u: T.Usage) -> str:
        c = T.Completion(id=rid, created=created, model=body.model, choices=[], usage=u)
        return sse(c.model_dump(mode="json"))

    return StreamingResponse(
        stream_choices(state, gens, on_delta, lambda i, d: chunk(i, "", finish(d.finish_reason)),
                       on_usage if body.include_usage else None, lambda texts: remember(state, rid, spec, gens, texts)),
        media_type="text/event-stream", headers=reply.headers)


@router.post("/v1/chat/completions", response_model=T.ChatCompletion)
async def chat_completions(request: Request,
                           body: T.ChatCompletionRequest = Depends(json_body(T.ChatCompletionRequest)),
                           state: ServeState = Depends(get_state)):
    body.refusals()
    k = (body.top_logprobs or 0) if body.logprobs else None
    params = body.params(state.settings.default_max_tokens, k)
    if body.max_completion_tokens:
        params.max_tokens = body.max_completion_tokens
    spec = GenSpec(body.model, params, messages=body.texts(), extra={"user": user_of(request, body.user)})
    reply = await Reply.start(state, spec, body.n, "chatcmpl")
    if not body.stream:
        return await reply.finished(request, state, T.ChatCompletion, lambda i, r: T.ChatChoice(
            index=i, message=T.AssistantMessage(content=r.text), finish_reason=finish(r.done.finish_reason),
            logprobs=chat_logprobs(r.logprobs, k or 0)))
    gens, rid, created = reply.gens, reply.rid, reply.created
    first = [True] * body.n

    def chunk(choices: list[T.ChunkChoice], usage: T.Usage | None = None) -> str:
        c = T.ChatCompletionChunk(id=rid, created=created, model=body.model, choices=choices, usage=usage)
        return sse(c.model_dump(exclude=None if usage else {"usage"}, mode="json", exclude_none=False))

    def on_delta(i: int, ev: Delta) -> str:
        delta = T.ChunkDelta(role="assistant", content=ev.text) if first[i] else T.ChunkDelta(content=ev.text)
        first[i] = False
        return chunk([T.ChunkChoice(index=i, delta=delta, logprobs=chat_logprobs(ev.logprobs, k or 0))])

    def on_done(i: int, d: Done) -> str:
        return chunk([T.ChunkChoice(index=i, delta=T.ChunkDelta(), finish_reason=finish(d.finish_reason))])

    return StreamingResponse(
        stream_choices(state, gens, on_delta, on_done, (lambda u: chunk([], u)) if body.include_usage else None,
                       lambda texts: remember(state, rid, spec, gens, texts)),
        media_type="text/event-stream", headers=reply.headers)


@router.post("/v1/embeddings", response_model=T.EmbeddingList)
async def embeddings(body: T.EmbeddingRequest = Depends(json_body(T.EmbeddingRequest)),
                     state: ServeState = Depends(get_state)) -> T.EmbeddingList:
    from quantgrid.serve.embeddings import embed_texts

    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise UnsupportedParameter("input", "input is an empty list", hint="send at least one text")
    vectors, n_tokens = await embed_texts(state, body.model, texts, body.dimensions)
    data = [T.Embedding(index=i, embedding=v if body.encoding_format == "float"
                        else base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode())
            for i, v in enumerate(vectors)]
    return T.EmbeddingList(data=data, model=body.model,
                           usage=T.EmbeddingUsage(prompt_tokens=n_tokens, total_tokens=n_tokens))



@router.post("/v1/feedback", response_model=FeedbackReceipt)
async def feedback(body: FeedbackRequest = Depends(json_body(FeedbackRequest)),
                   state: ServeState = Depends(get_state)) -> FeedbackReceipt:
    """Thumbs up or down for a response, by its id; counted per A/B arm, stored only when opted in."""
    from fastapi.concurrency import run_in_threadpool

    ex, stored = await run_in_threadpool(state.extras["feedback"].rate, body)
    state.metrics.feedback.labels(arm=ex.arm or "none", rating=body.rating).inc()
    return FeedbackReceipt(id=body.id, rating=body.rating, arm=ex.arm, stored=stored)
