"""The generation engine: one base model, LoRA slots, continuous batching.

A scheduler thread owns the model. Each turn of its loop it

1. admits waiting requests (up to ``max_batch`` rows): gives each an adapter slot
   (loading the adapter, evicting the least recently used idle one), prefills their
   prompts together, and appends their KV cache to the running batch;
2. runs one decode step for every running row in a single forward pass, where rows
   may use different adapters (see ``lora_batch``);
3. samples a token per row, streams the new text, and drops finished or cancelled rows.

So requests join and leave between decode steps, and the base weights are shared by all
of them. The KV cache is one transformers ``DynamicCache`` for the whole batch, with
rows left-padded to a common length (padding is masked out and trimmed when the
longest row leaves).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from quantgrid.errors import ConfigError, ModelError, NotFound, PayloadTooLarge
from quantgrid.serve.events import Delta, Done, Event, Failed, TokenLogprob  # Delta/Done/Event re-exported
from quantgrid.serve.lora_batch import (
    NO_ADAPTER,
    LoraContext,
    MultiLoraLinear,
    SlotPlan,
    plan_slots,
    use_slots,
    wrap_linears,
)
from quantgrid.serve.sampling import SamplingParams, find_stop, make_generator, safe_prefix_len, sample_token
from quantgrid.serve.slots import AdapterInfo, SlotTable, describe_adapter, read_adapter

log = logging.getLogger(__name__)
_ids = itertools.count(1)


@dataclass(eq=False)
class GenRequest:
    """One generation. ``sink`` receives events from the scheduler thread."""

    prompt_ids: list[int]
    params: SamplingParams
    sink: Callable[[Event], None]
    adapter: str | None = None
    adapter_path: Path | None = None  # fixed at submit: a release swapped out meanwhile still loads
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: bool = False
    # Filled in by the scheduler.
    slot: int = NO_ADAPTER
    generated: list[int] = field(default_factory=list)
    sent_chars: int = 0
    pos: int = 0
    last_token: int = 0
    finish_reason: str | None = None
    generator: torch.Generator | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet sent (params.logprobs set)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class EngineStats:
    requests_finished: int = 0
    requests_cancelled: int = 0
    requests_failed: int = 0
    tokens_generated: int = 0
    prompt_tokens: int = 0
    decode_steps: int = 0
    adapter_loads: int = 0
    adapter_evictions: int = 0


class Engine:
    """Base model + LoRA slots + a scheduler thread. Call :meth:`start` before submitting."""

    def __init__(self, model, tokenizer, *, max_batch: int = 16, max_slots: int = 8, rank: int = 16,
                 base=None, max_prompt_chars: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.base = base  # BaseInfo, for the adapter/base mismatch check
        self.max_batch = max_batch
        self.rank = rank
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        # No token is this long: a longer prompt cannot fit the context, so it is refused untokenized.
        self.max_prompt_chars = max_prompt_chars or max(65536, 32 * self.context_length)
        self.device = next(model.parameters()).device
        self.eos_ids = self._eos_ids()
        self.ctx = LoraContext()
        self.slots = SlotTable(max_slots)
        self.modules: dict[str, MultiLoraLinear] = {}
        self.adapters: dict[str, AdapterInfo] = {}
        self.stats = EngineStats()
        self.lock = threading.RLock()  # held around every forward pass and slot write
        self._waiting: deque[GenRequest] = deque()
        self._wake = threading.Condition()
        self._rows: list[GenRequest] = []
        self._live: dict[int, GenRequest] = {}  # id -> request, from submit until its last event
        self._cache = None
        self._mask: torch.Tensor | None = None  # (B, L) 1 = real token, 0 = left padding
        self._plan: SlotPlan | None = None  # row -> slot plan of the running batch
        self._thread: threading.Thread | None = None
        self._stop = False

    @classmethod
    def from_base(cls, base: str, *, device: str | None = None, dtype: str | None = None, **kw) -> Engine:
        from quantgrid.ml.models import base_info, load_base

        model, tok = load_base(base, device=device, dtype=dtype, load_in_4bit=False)
        return cls(model, tok, base=base_info(base, model.config), **kw)

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return {i for i in ids if i is not None}

    # ------------------------------------------------------------------ adapters

    def register_adapter(self, name: str, path: str | Path) -> AdapterInfo:
        """Make an adapter servable. Its weights load into a slot on first use."""
        info = describe_adapter(name, path)
        if self.base is not None:
            from quantgrid.ml.models import check_adapter_base

            check_adapter_base(info.path, self.base)
        with self.lock:
            old = self.adapters.get(name)
            self.adapters[name] = info
            if old is not None and old.path != info.path and name in self.slots.slot_of:
                # Same name, new files: reload into the slot on the next use.
                if self.slots.refs[self.slots.slot_of[name]] == 0:
                    self.slots.forget(name)
        return info

    def _load_into_slot(self, name: str, slot: int, path: Path | None = None) -> None:
        weights = read_adapter(path or self.adapters[name].path)
        missing = [m for m in weights.factors if m not in self.modules]
        if missing:
            names = dict(self.model.named_modules())
            bad = [m for m in missing if m not in names]
            if bad:
                raise ModelError(f"adapter {name!r} targets modules the base does not have: {bad[:3]}",
                                 hint="the adapter was trained for another base model")
            self.modules.update(wrap_linears(self.model, missing, self.ctx, self.slots.n_slots, self.rank))
        for mname, mod in self.modules.items():
            a, b = weights.factors.get(mname, (None, None))
            if a is not None and (a.shape[1] != mod.base.in_features or b.shape[0] != mod.base.out_features):
                raise ModelError(f"adapter {name!r}: {mname} has shapes {tuple(a.shape)}/{tuple(b.shape)} "
                                 f"that do not fit the base layer", hint="the adapter was trained for another base")
        for mname, mod in self.modules.items():
            a, b = weights.factors.get(mname, (None, None))
            mod.set_slot(slot, a, b, weights.scaling)
        self.stats.adapter_loads += 1

    # ------------------------------------------------------------------ requests

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a raw prompt (completions, Ollama ``raw``), as training tokenizes text."""
        self.check_prompt_size(len(prompt))
        return self.tokenizer(prompt)["input_ids"]

    def prompt_format(self, adapter: str | None) -> AdapterInfo | None:
        """The registered adapter whose training prompt a chat request is rendered with."""
        return self.adapters.get(adapter) if adapter is not None else None

    def encode_chat(self, messages: list[dict[str, Any]], adapter: str | None = None) -> list[int]:
        """Token ids of a chat request for ``adapter``: the prompt that adapter was trained on.

        An adapter from ``quantgrid train`` (or a release) names its recipe's template in its
        manifest, and the ids are the training encoder's for the same question (the text
        its ``chat_template.jinja`` renders too). An adapter with only a shipped
        ``chat_template.jinja`` uses that; the base model and foreign adapters use the
        base tokenizer's chat template.
        """
        self.check_prompt_size(sum(len(str(m.get("content") or "")) for m in messages))
        info = self.prompt_format(adapter)
        if info is not None and info.prompt_template is not None:
            from quantgrid.data.prompts import example_from_messages
            from quantgrid.eval.generate import prompt_ids

            return prompt_ids(self.tokenizer, example_from_messages(messages), info.prompt_template,
                              info.system_prompt)
        template = info.chat_template if info is not None and info.chat_template else None
        if template or getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                                     tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.encode(text)

    def encode_request(self, messages: list[dict[str, Any]] | None = None, prompt: str | None = None,
                       adapter: str | None = None) -> list[int]:
        """Ids of a chat request (``messages``) or a raw prompt, checked against the context."""
        ids = self.encode_chat(messages, adapter) if messages is not None else self.encode(prompt or "")
        self.check_prompt(len(ids))
        return ids

    async def aencode(self, messages: list[dict[str, Any]] | None = None, prompt: str | None = None,
                      adapter: str | None = None) -> list[int]:
        """``encode_request`` in a worker thread: a long prompt never stalls the event loop
        (other requests, /health). Too long a prompt is refused before any tokenizing."""
        self.check_prompt_size(len(prompt or "") if messages is None else
                               sum(len(str(m.get("content") or "")) for m in messages))
        return await asyncio.to_thread(self.encode_request, messages, prompt, adapter)

    def check_prompt_size(self, n_chars: int) -> None:
        """Refuse (413) a prompt longer than ``max_prompt_chars`` before tokenizing it."""
        if n_chars > self.max_prompt_chars:
            raise PayloadTooLarge(f"the prompt is {n_chars:,} characters; this server takes at most "
                                  f"{self.max_prompt_chars:,} (its context is {self.context_length} tokens)",
                                  hint="shorten the prompt or the chat history")

    def check_prompt(self, n_tokens: int) -> None:
        if n_tokens >= self.context_length:
            raise ConfigError(f"the prompt is {n_tokens} tokens, but the model's context is "
                              f"{self.context_length} tokens", hint="shorten the prompt or the chat history")

    def submit(self, req: GenRequest) -> GenRequest:
        """Queue a request; its settings are validated and clamped here (SamplingError: 400)."""
        req.params = req.params.validated()
        if req.adapter is not None:
            info = self.adapters.get(req.adapter)
            if info is None:
                raise NotFound(f"adapter {req.adapter!r} is not loaded", hint="see GET /v1/models")
            req.adapter_path = info.path
        self.check_prompt(len(req.prompt_ids))
        with self._wake:
            self._live[req.id] = req
            self._waiting.append(req)
            self._wake.notify()
        return req

    def cancel(self, request_id: int) -> bool:
        """Cancel a queued or running request: it ends with ``Done("cancelled")`` at the next
        step, its row and slot freed. False if it already finished."""
        req = self._live.get(request_id)
        if req is None:
            return False
        req.cancel()
        with self._wake:
            self._wake.notify()
        return True

    async def stream(self, prompt_ids: list[int], params: SamplingParams,
                     adapter: str | None = None) -> AsyncIterator[Event]:
        """Submit and yield events. Leaving early (``aclose``, a cancelled task: the client is
        gone) cancels the request, so it stops within one decode step."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()
        req = self.submit(GenRequest(prompt_ids, params, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev),
                                     adapter=adapter))
        try:
            while True:
                ev = await queue.get()
                yield ev
                if not isinstance(ev, Delta):
                    return
        finally:
            req.cancel()

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None,
                 adapter: str | None = None, timeout: float = 300) -> tuple[str, Done]:
        """Blocking helper (tests, benchmarks): the whole text and the Done event."""
        ids = self.encode(prompt) if isinstance(prompt, str) else prompt
        done = threading.Event()
        parts: list[str] = []
        result: list[Event] = []

        def sink(ev: Event) -> None:
            if isinstance(ev, Delta):
                parts.append(ev.text)
            else:
                result.append(ev)
                done.set()

        self.submit(GenRequest(ids, params or SamplingParams(temperature=0), sink, adapter=adapter))
        if not done.wait(timeout):
            raise TimeoutError("generation did not finish")
        if isinstance(result[0], Failed):
            raise result[0].error
        return "".join(parts), result[0]  # type: ignore[return-value]

    @property
    def n_active(self) -> int:
        return len(self._rows)

    @property
    def n_waiting(self) -> int:
        return len(self._waiting)

    # ------------------------------------------------------------------ scheduler

    def start(self) -> Engine:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="quantgrid-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self._waiting and not self._rows:
                    self._wake.wait()
                if self._stop:
                    break
            try:
                with self.lock, torch.inference_mode():
                    self._admit()
                    if self._rows:
                        self._decode_step()
            except Exception as e:  # a bad batch fails its requests, never the server
                log.exception("engine step failed")
                for r in self._rows:
                    self._finish(r, None, error=e)
                self._rows, self._cache, self._mask, self._plan = [], None, None, None
        for r in list(self._rows) + list(self._waiting):
            self._finish(r, None, error=ModelError("the server is shutting down"))

    def _admit(self) -> None:
        new: list[GenRequest] = []
        while self._waiting and len(self._rows) + len(new) < self.max_batch:
            req = self._waiting[0]
            if req.cancelled:
                self._waiting.popleft()
                self._finish(req, "cancelled")
                continue
            try:
                if req.adapter is not None:
                    slot = self.acquire_slot(req.adapter, req.adapter_path)
                    if slot is None:
                        break  # every slot is busy: wait for a running request to finish
                    req.slot = slot
                self._waiting.popleft()
                req.generator = make_generator(req.params.seed)
            except Exception as e:  # this request only: its slot (if any) goes back in _finish
                if self._waiting and self._waiting[0] is req:
                    self._waiting.popleft()
                self._finish(req, None, error=e)
                continue
            new.append(req)
        if new:
            try:
                self._prefill(new)
            except Exception as e:  # fails only the joining requests; the running batch is untouched
                log.exception("prefill failed")
                for r in new:
                    if r not in self._rows:
                        self._finish(r, None, error=e)

    def acquire_slot(self, name: str, path: Path | None = None) -> int | None:
        """Slot holding adapter ``name`` (loaded now if needed), one reference taken; None if all
        slots are busy. Call with ``self.lock`` held; give it back with ``slots.release``."""
        got = self.slots.acquire(name)
        if got is None:
            return None
        slot, needs_load, evicted = got
        if evicted is not None:
            self.stats.adapter_evictions += 1
        if needs_load:
            try:
                self._load_into_slot(name, slot, path)
            except Exception:
                self.slots.forget(name)
                raise
        return slot

    def _prefill(self, new: list[GenRequest]) -> None:
        from transformers import DynamicCache

        n, length = len(new), max(len(r.prompt_ids) for r in new)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((n, length), pad, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for i, r in enumerate(new):  # left padding: every row's last token is at the end
            ids[i, length - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, length - len(r.prompt_ids):] = 1
            r.pos = len(r.prompt_ids)
            self.stats.prompt_tokens += len(r.prompt_ids)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, positions, cache, plan_slots(self._slot_ids(new)))
        self._merge(new, cache, mask)
        self._sample_and_emit(new, logits)

    def _decode_step(self) -> None:
        rows = self._rows
        ids = torch.tensor([[r.last_token] for r in rows], dtype=torch.long)
        self._mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        positions = torch.tensor([[r.pos] for r in rows], dtype=torch.long)
        if self._plan is None:  # rows changed since the last step
            self._plan = plan_slots(self._slot_ids(rows))
        logits = self._forward(ids, self._mask, positions, self._cache, self._plan)
        for r in rows:
            r.pos += 1  # tokens in the cache
        self.stats.decode_steps += 1
        self._sample_and_emit(rows, logits)

    def _slot_ids(self, rows: list[GenRequest]) -> torch.Tensor:
        return torch.tensor([r.slot for r in rows], dtype=torch.long, device=self.device)

    def _forward(self, ids, mask, positions, cache, plan: SlotPlan) -> torch.Tensor:
        """One forward pass; returns the last position's logits (N, V)."""
        with use_slots(self.ctx, plan):
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                             logits_to_keep=1)
        return out.logits[:, -1, :].float().cpu()

    def _merge(self, new: list[GenRequest], cache, mask: torch.Tensor) -> None:
        """Append freshly prefilled rows to the running batch, left-padding the shorter side."""
        self._plan = None
        if self._cache is None or not self._rows:
            self._rows, self._cache, self._mask = list(new), cache, mask
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            for attr in ("keys", "values"):
                a, b = getattr(old_layer, attr), getattr(new_layer, attr)  # (B, h, L, hd), (n, h, Ln, hd)
                a = torch.nn.functional.pad(a, (0, 0, width - old_len, 0))
                b = torch.nn.functional.pad(b, (0, 0, width - new_len, 0))
                setattr(old_layer, attr, torch.cat([a, b], dim=0))
        self._mask = torch.cat([torch.nn.functional.pad(self._mask, (width - old_len, 0)),
                                torch.nn.functional.pad(mask, (width - new_len, 0))], dim=0)
        self._rows = self._rows + list(new)

    def _sample_and_emit(self, rows: list[GenRequest], logits: torch.Tensor) -> None:
        for i, r in enumerate(rows):
            if r.cancelled:
                self._finish(r, "cancelled")
                continue
            try:
                self._sample_row(r, logits[i])
            except Exception as e:  # this row ends with the error; the others decode on
                log.exception("request %s failed while decoding", r.id)
                self._finish(r, None, error=e)
        self._drop_finished()

    def _sample_row(self, r: GenRequest, logits: torch.Tensor) -> None:
        """Sample, record and stream one token of one row (finishing it at eos, a stop or a limit)."""
        if not bool(torch.isfinite(logits).any()):
            raise ModelError("the model produced no finite logits for this request",
                             hint="retry; if it persists, the adapter's weights may be broken")
        tok = sample_token(logits, r.params, r.generator)
        r.last_token = tok  # fed at position r.pos by the next decode step
        if tok in self.eos_ids and not r.params.ignore_eos:  # flush text held back for a possible stop string
            self._emit_text(r, self._text(r), final=True)
            self._finish(r, "stop")
            return
        if r.params.logprobs is not None:
            r.logprobs.append(self._token_logprob(r, logits, tok))
        r.generated.append(tok)
        self.stats.tokens_generated += 1
        text = self._text(r)
        # Text already sent holds no stop string's start (safe_prefix_len kept it back).
        cut = find_stop(text, r.params.stop, start=r.sent_chars) if r.params.stop else None
        if cut is not None:
            self._emit_text(r, text[:cut], final=True)
            self._finish(r, "stop")
        elif len(r.generated) >= r.params.max_tokens or r.pos + 1 >= self.context_length:
            self._emit_text(r, text, final=True)
            self._finish(r, "length")
        else:
            self._emit_text(r, text, final=False)

    def _text(self, r: GenRequest) -> str:
        return self.tokenizer.decode(r.generated, skip_special_tokens=True)

    def _emit_text(self, r: GenRequest, text: str, final: bool) -> None:
        end = len(text) if final else safe_prefix_len(text, r.params.stop)
        if end > r.sent_chars or (final and r.logprobs):
            lps, r.logprobs = (r.logprobs or None), []
            r.sink(Delta(text[r.sent_chars:end], lps))
            r.sent_chars = end

    def _token_logprob(self, r: GenRequest, logits: torch.Tensor, tok: int) -> TokenLogprob:
        """The sampled token's log-probability and the ``params.logprobs`` most likely tokens.
        A token's text is what it adds after the previous token (keeps SentencePiece spaces)."""
        lp = torch.log_softmax(logits.float(), dim=-1)
        prev = r.generated[-1:] or r.prompt_ids[-1:]
        head = self.tokenizer.decode(prev, skip_special_tokens=True)

        def piece(t: int) -> str:
            return self.tokenizer.decode(prev + [t], skip_special_tokens=True)[len(head):]

        top = []
        if r.params.logprobs:
            vals, idx = torch.topk(lp, min(r.params.logprobs, lp.shape[-1]))
            top = [(piece(int(t)), float(v)) for v, t in zip(vals, idx, strict=True)]
        return TokenLogprob(piece(tok), float(lp[tok]), top)

    def _finish(self, r: GenRequest, reason: str | None, error: Exception | None = None) -> None:
        if r.finish_reason is not None:
            return
        r.finish_reason = reason or "error"
        try:
            if error is not None:
                self.stats.requests_failed += 1
                event: Event = Failed(error)
            else:
                if reason == "cancelled":
                    self.stats.requests_cancelled += 1
                else:
                    self.stats.requests_finished += 1
                event = Done(reason, len(r.prompt_ids), len(r.generated))
            r.sink(event)
        except Exception:  # a sink that cannot take events (its loop closed): nobody is listening
            log.warning("request %s: could not deliver its last event", r.id, exc_info=True)
        finally:
            self._live.pop(r.id, None)
            if r.slot != NO_ADAPTER:
                self.slots.release(r.slot)
                r.slot = NO_ADAPTER

    def _drop_finished(self) -> None:
        keep = [i for i, r in enumerate(self._rows) if r.finish_reason is None]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        self._plan = None
        if not self._rows:
            self._cache, self._mask = None, None
            return
        idx = torch.tensor(keep, dtype=torch.long)
        mask = self._mask.index_select(0, idx)
        start = int((mask.sum(0) > 0).long().argmax())  # leading columns that are padding in every row
        self._mask = mask[:, start:]
        dev_idx = idx.to(self.device)
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, dev_idx)[:, :, start:]
            layer.values = layer.values.index_select(0, dev_idx)[:, :, start:]

    # ------------------------------------------------------------------ router support

    def capture_inputs(self, prompt_ids: list[int]) -> dict[str, torch.Tensor]:
        """Inputs (T, d_in) of every wrapped Linear for a prompt run through the base alone."""
        captured: dict[str, torch.Tensor] = {}
        with self.lock, torch.inference_mode(), use_slots(self.ctx, None, capture=captured):
            ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
            self.model.model(input_ids=ids, use_cache=False)
        return {k: v[0].float().cpu() for k, v in captured.items()}

    def ensure_wrapped(self, module_names: list[str]) -> None:
        with self.lock:
            missing = [m for m in module_names if m not in self.modules]
            if missing:
                self.modules.update(wrap_linears(self.model, missing, self.ctx, self.slots.n_slots, self.rank))

    def describe(self) -> dict[str, Any]:
        return {"active": self.n_active, "waiting": self.n_waiting, "max_batch": self.max_batch,
                "slots": self.slots.n_slots, "loaded_adapters": self.slots.loaded(),
                "context_length": self.context_length}
