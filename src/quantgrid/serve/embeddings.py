"""Embeddings from the served model (``/v1/embeddings``, ``/api/embed``).

Pooling: the mean of the last hidden layer (after the final norm) over the text's tokens,
L2-normalised. A name that resolves to an adapter embeds with that adapter applied, so
``quantgrid:NAME`` and ``base`` give different vectors. ``auto`` is refused: routing
picks per question, and a vector space must not change between inputs.
"""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool

from quantgrid.errors import ConfigError, NotFound, ServerError


async def embed_texts(state, model: str, texts: list[str], dimensions: int | None = None
                      ) -> tuple[list[list[float]], int]:
    """(unit vectors, prompt tokens) for ``texts`` with the model ``model`` serves; with
    ``dimensions``, the first that many components, re-normalised."""
    vectors, n = await _embed_all(state, model, texts)
    if dimensions is not None:
        if dimensions > len(vectors[0]):
            from quantgrid.serve.errors import UnsupportedParameter

            raise UnsupportedParameter("dimensions", f"dimensions must be at most {len(vectors[0])} for this model",
                                       hint="leave dimensions out for the full vector")
        vectors = [_unit(v[:dimensions]) for v in vectors]
    return vectors, n


def _unit(v: list[float]) -> list[float]:
    norm = sum(x * x for x in v) ** 0.5 or 1.0
    return [x / norm for x in v]


async def _embed_all(state, model: str, texts: list[str]) -> tuple[list[list[float]], int]:
    if state.engine is None:
        raise NotFound("embeddings need the local engine, which is off",
                       hint="start the server with the local engine (LOCAL_PYTORCH_ENABLED=true)")
    target = state.router.resolve(model)
    if target.auto:
        raise ConfigError("'auto' has no embeddings: routing picks an adapter per question",
                          hint="name a model: base, quantgrid or quantgrid:NAME")
    engine = state.engine
    ids = [engine.encode(t) for t in texts]
    for n in ids:
        engine.check_prompt(len(n))
    return await run_in_threadpool(_embed, engine, target.adapter, ids), sum(len(i) for i in ids)


def _embed(engine, adapter: str | None, batch: list[list[int]]) -> list[list[float]]:
    import torch

    from quantgrid.serve.lora_batch import NO_ADAPTER, use_slots

    with engine.lock, torch.inference_mode():
        slot = NO_ADAPTER
        if adapter is not None:
            path = engine.adapters[adapter].path
            slot = engine.acquire_slot(adapter, path)
            if slot is None:
                raise ServerError("every adapter slot is busy", hint="retry in a moment, or raise --max-slots")
        try:
            out = []
            for ids in batch:
                x = torch.tensor([ids or [engine.tokenizer.bos_token_id or 0]], device=engine.device)
                with use_slots(engine.ctx, torch.full((1,), slot, dtype=torch.long, device=engine.device)):
                    hidden = engine.model.model(input_ids=x, use_cache=False).last_hidden_state[0]
                v = hidden.float().mean(0)
                out.append((v / v.norm().clamp(min=1e-12)).cpu().tolist())
            return out
        finally:
            if slot != NO_ADAPTER:
                engine.slots.release(slot)
