"""The Ollama API (``/api/*`` and ``GET /``), on the same backends as the OpenAI one.

Generation answers newline-delimited JSON when streaming (Ollama's default) or one object
with ``"stream": false``; the final object carries every count and timing field Ollama
does. Durations are nanoseconds, measured by the server: ``load_duration`` from the
request's arrival to its submission (tokenizing, routing, choosing the backend),
``prompt_eval_duration`` from submission to the first token (queueing, adapter load,
prefill), ``eval_duration`` from the first token to the last. Model management routes
(pull, push, create, copy, delete, blobs) answer 501: models are given on the command line.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel

import quantgrid
from quantgrid.data.modelfile import TRAINS_WITH_SYSTEM, Modelfile, go_template, stop_words
from quantgrid.errors import QuantGridError
from quantgrid.serve import ollama_types as T
from quantgrid.serve.catalog import ModelCard, card, cards
from quantgrid.serve.errors import UnsupportedParameter, json_body
from quantgrid.serve.events import Delta, Done, Failed, TokenLogprob
from quantgrid.serve.feedback import REQUEST_ID_HEADER
from quantgrid.serve.generation import Collected, Generation, ServeState, observe, remember, start
from quantgrid.serve.openai_api import collect_finished, get_state, user_of
from quantgrid.serve.security import require_api_key
from quantgrid.serve.upstream import GenSpec

router = APIRouter(dependencies=[Depends(require_api_key)])
root = APIRouter()  # GET / stays open, like /health


class NotImplementedHere(QuantGridError):
    http_status = 501
    code = "not_implemented"


class Logprob(BaseModel):
    token: str
    logprob: float
    top_logprobs: list[dict[str, Any]] | None = None


class Message(BaseModel):
    role: str = "assistant"
    content: str


class GenerateChunk(BaseModel):
    """One streamed object, or the whole answer; the count/timing fields only when ``done``."""

    model: str
    created_at: str
    response: str | None = None
    message: Message | None = None
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    logprobs: list[Logprob] | None = None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(1, int(seconds * 1e9))  # never 0: clients divide by these


def _logprobs(lps: list[TokenLogprob] | None, k: int) -> list[Logprob] | None:
    if lps is None:
        return None
    return [Logprob(token=t.token, logprob=t.logprob,
                    top_logprobs=[{"token": a, "logprob": v} for a, v in t.top[:k]]) for t in lps]


def _final(model: str, gen: Generation, done: Done, t_end: float, piece: dict, lps=None) -> GenerateChunk:
    return GenerateChunk(
        model=model, created_at=_now_iso(), **piece, done=True,
        done_reason=done.finish_reason if done.finish_reason in ("stop", "length") else "stop",
        total_duration=_ns(t_end - gen.t_start), load_duration=_ns(gen.t_submit - gen.t_start),
        prompt_eval_count=done.prompt_tokens, prompt_eval_duration=_ns(gen.t_first - gen.t_submit),
        eval_count=done.completion_tokens, eval_duration=_ns(t_end - gen.t_first), logprobs=lps)


def _dump(c: BaseModel) -> str:
    return c.model_dump_json(exclude_none=True) + "\n"


async def _respond(request: Request, state: ServeState, body: T._Generating, spec: GenSpec, chat: bool):
    spec.extra["user"] = user_of(request)
    gen = await start(state, "ollama", spec)
    k = body.top_logprobs or 0
    rid = f"ollama-{uuid.uuid4().hex[:24]}"
    headers = {**gen.headers(), REQUEST_ID_HEADER: rid}

    def piece(text: str) -> dict:
        return {"message": Message(content=text)} if chat else {"response": text}

    if not body.stream:
        r: Collected = (await collect_finished(request, state, "ollama", rid, spec, [gen]))[0]
        out = _final(body.model, gen, r.done, r.t_end, piece(r.text), _logprobs(r.logprobs, k))
        return JSONResponse(out.model_dump(mode="json", exclude_none=True), headers=headers)

    async def lines():
        done, text = None, ""
        try:
            async for ev in gen.events:
                if isinstance(ev, Delta):
                    text += ev.text
                    yield _dump(GenerateChunk(model=body.model, created_at=_now_iso(), **piece(ev.text), done=False,
                                              logprobs=_logprobs(ev.logprobs, k)))
                elif isinstance(ev, Failed):
                    yield json.dumps({"error": f"generation failed: {ev.error}"}) + "\n"
                    return
                else:
                    done = ev
                    remember(state, rid, spec, [gen], [text])
                    yield _dump(_final(body.model, gen, ev, time.perf_counter(), piece("")))
                    return
        finally:
            await gen.events.aclose()  # a client gone mid-stream cancels the request here
            observe(state, "ollama", gen, done)

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


# ---------------------------------------------------------------------- generation


@router.post("/api/generate")
async def generate(request: Request, body: T.OllamaGenerateRequest = Depends(json_body(T.OllamaGenerateRequest)),
                   state: ServeState = Depends(get_state)):
    body.refusals()
    if not body.prompt and not body.system:  # Ollama: an empty prompt only loads the model
        card(state, body.model)
        return JSONResponse({"model": body.model, "created_at": _now_iso(), "response": "", "done": True,
                             "done_reason": "load"})
    params = body.params(state.settings.default_max_tokens)
    if body.raw:
        spec = GenSpec(body.model, params, prompt=body.prompt)
    else:  # like Ollama: the model's template wraps the prompt
        msgs = ([{"role": "system", "content": body.system}] if body.system else [])
        spec = GenSpec(body.model, params, messages=msgs + [{"role": "user", "content": body.prompt}])
    return await _respond(request, state, body, spec, chat=False)


@router.post("/api/chat")
async def chat(request: Request, body: T.OllamaChatRequest = Depends(json_body(T.OllamaChatRequest)),
               state: ServeState = Depends(get_state)):
    body.refusals()
    if not body.messages:  # Ollama: no messages only loads the model
        card(state, body.model)
        return JSONResponse({"model": body.model, "created_at": _now_iso(),
                             "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "load"})
    spec = GenSpec(body.model, body.params(state.settings.default_max_tokens), messages=body.texts())
    return await _respond(request, state, body, spec, chat=True)


# ---------------------------------------------------------------------- embeddings


async def _embed(state: ServeState, model: str, texts: list[str], dimensions: int | None = None):
    from quantgrid.serve.embeddings import embed_texts

    return await embed_texts(state, model, texts, dimensions)


@router.post("/api/embed", response_model=T.Embed)
async def embed(body: T.OllamaEmbedRequest = Depends(json_body(T.OllamaEmbedRequest)),
                state: ServeState = Depends(get_state)) -> T.Embed:
    t0 = time.perf_counter()
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise UnsupportedParameter("input", "input is empty", hint="send a text or a list of texts")
    vectors, n = await _embed(state, body.model, texts, body.dimensions)
    total = _ns(time.perf_counter() - t0)
    return T.Embed(model=body.model, embeddings=vectors, total_duration=total, load_duration=1, prompt_eval_count=n)


@router.post("/api/embeddings", response_model=T.Embeddings)
async def embeddings(body: T.OllamaEmbeddingsRequest = Depends(json_body(T.OllamaEmbeddingsRequest)),
                     state: ServeState = Depends(get_state)) -> T.Embeddings:
    if not body.prompt:
        card(state, body.model)
        return T.Embeddings(embedding=[])
    vectors, _ = await _embed(state, body.model, [body.prompt])
    return T.Embeddings(embedding=vectors[0])


# ---------------------------------------------------------------------- models


def _details(c: ModelCard) -> T.Details:
    return T.Details(**c.details())


def _tag(c: ModelCard) -> T.TagModel:
    return T.TagModel(name=c.name, model=c.name, modified_at=c.modified_at, size=c.size, digest=c.digest,
                      details=_details(c))


@router.get("/api/tags", response_model=T.Tags)
async def tags(state: ServeState = Depends(get_state)) -> T.Tags:
    return T.Tags(models=[_tag(c) for c in cards(state)])


@router.get("/api/ps", response_model=T.Ps)
async def ps(state: ServeState = Depends(get_state)) -> T.Ps:
    """The base, and every adapter now held in a slot (evicted ones are not 'running')."""
    if state.engine is None:
        return T.Ps(models=[])
    loaded = set(state.engine.slots.loaded())
    on_gpu = state.engine.device.type != "cpu"
    never = (datetime.now(timezone.utc) + timedelta(days=365 * 100)).isoformat()  # no keep-alive expiry
    out = []
    for c in cards(state):
        if c.adapter is None and c.name != "base":
            continue  # 'quantgrid' without a release, and 'auto', are the base again
        if c.adapter is not None and c.adapter not in loaded:
            continue
        out.append(T.PsModel(**_tag(c).model_dump(), expires_at=never, size_vram=c.size if on_gpu else 0,
                             context_length=c.base.context_length))
    return T.Ps(models=out)


@router.post("/api/show", response_model=T.Show)
async def show(body: T.OllamaShowRequest = Depends(json_body(T.OllamaShowRequest)),
               state: ServeState = Depends(get_state)) -> T.Show:
    c = card(state, body.which)
    cfg, fam = c.base.config, c.base.family
    info: dict[str, Any] = {"general.architecture": fam, "general.parameter_count": c.base.parameters,
                            "general.basename": c.name, f"{fam}.context_length": c.base.context_length}
    for key, ours in (("hidden_size", "embedding_length"), ("num_hidden_layers", "block_count"),
                      ("num_attention_heads", "attention.head_count"),
                      ("num_key_value_heads", "attention.head_count_kv"), ("vocab_size", "vocab_size")):
        if key in cfg:
            info[f"{fam}.{ours}"] = cfg[key]
    if c.adapter:
        info["quantgrid.adapter"] = c.adapter
        info["quantgrid.adapter_description"] = c.description
    mf = _modelfile(state, c)
    return T.Show(modelfile="# served by quantgrid serve\n" + mf.render(), parameters="\n".join(mf.parameter_lines()),
                  template=mf.template or "", system=mf.system or "", details=_details(c), model_info=info,
                  capabilities=["completion", "embedding"], modified_at=c.modified_at)


def _modelfile(state: ServeState, c: ModelCard) -> Modelfile:
    """What ``ollama show`` reports for a served name: the prompt its adapter was trained on
    (the Go twin of the recipe's template, its system prompt and stop words), as
    ``quantgrid export ollama`` writes it; for the base, or an adapter that names no recipe
    template, the chat template it is served with."""
    tok = state.engine.tokenizer
    base_template = getattr(tok, "chat_template", None)
    fmt = state.engine.prompt_format(c.adapter)
    name = fmt.prompt_template if fmt is not None else None
    params: dict[str, object] = {"temperature": 0.8, "top_p": 0.9, "num_predict": state.settings.default_max_tokens}
    if name is not None:
        params["stop"] = stop_words(name, tok)
    return Modelfile(from_="base", adapter=str(c.adapter_path) if c.adapter_path else None,
                     template=(go_template(name, base_template) if name else None)
                     or (fmt.chat_template if fmt is not None else None) or base_template,
                     system=fmt.system_prompt if fmt is not None and name in TRAINS_WITH_SYSTEM else None,
                     parameters=params)


@router.get("/api/version", response_model=T.Version)
async def version() -> T.Version:
    return T.Version(version=quantgrid.__version__)


def _not_here(what: str):
    async def refuse() -> None:
        raise NotImplementedHere(f"quantgrid serve does not {what}: models are given when the server starts",
                                 hint="serve adapters with --adapter NAME=DIR, releases with --release")
    return refuse


for _path, _method, _what in (("/api/pull", "POST", "pull models"), ("/api/push", "POST", "push models"),
                              ("/api/create", "POST", "create models"), ("/api/copy", "POST", "copy models"),
                              ("/api/delete", "DELETE", "delete models"),
                              ("/api/blobs/{digest}", "POST", "store blobs"),
                              ("/api/blobs/{digest}", "HEAD", "store blobs")):
    router.add_api_route(_path, _not_here(_what), methods=[_method], status_code=501, include_in_schema=True)


@root.get("/", response_class=PlainTextResponse)
async def running() -> str:
    return "Ollama is running"


@root.head("/")
async def running_head() -> Response:
    return Response(media_type="text/plain")
