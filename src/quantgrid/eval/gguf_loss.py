"""Proof of loss and generation through llama.cpp (llama-cpp-python) on GGUF files.

The deployed model is often a quantized GGUF (Q4_K_M for LocoLLM) rather than the
PyTorch weights: this backend scores exactly those files, so results.json can name the
quantization that was measured. The token ids are the ones the PyTorch path uses (the
base's Hugging Face tokenizer and ``quantgrid.ml.tokenize.encode``; quantgrid's GGUF export
embeds a tokenizer that gives the same ids), so the two backends' losses compare token for
token. The functions here have the signatures of ``eval.loss.load_for_eval``,
``eval.loss.completion_losses`` and ``eval.generate.generate_answers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantgrid.data.types import Example
from quantgrid.errors import EvalError
from quantgrid.ml.tokenize import IGNORE_INDEX, encode


def gguf_quantization(path: str | Path) -> str:
    """The file type llama.cpp reports for a GGUF (``general.file_type``): F32, F16, Q8_0, Q4_K_M, ..."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("general.file_type")
    if field is None:
        return "unknown"
    name = gguf.LlamaFileType(int(field.contents())).name  # e.g. MOSTLY_Q4_K_M, ALL_F32
    return name.split("_", 1)[1]


class GGUFVariants:
    """The base GGUF alone and, with an adapter, the base GGUF + the GGUF LoRA: one
    llama.cpp context each (llama.cpp applies a LoRA at load time)."""

    def __init__(self, base_gguf: str | Path, adapter_gguf: str | Path | None, n_ctx: int,
                 threads: int | None = None) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise EvalError("--gguf evaluates through llama.cpp, which needs llama-cpp-python",
                            hint="pip install llama-cpp-python") from None
        for p in (base_gguf, adapter_gguf):
            if p is not None and not Path(p).is_file():
                raise EvalError(f"GGUF file not found: {p}",
                                hint="write one with `quantgrid export gguf --base DIR --out FILE`")
        self.quantization = gguf_quantization(base_gguf)
        self.n_ctx = n_ctx
        kwargs: dict[str, Any] = dict(n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False, seed=0)
        if threads:
            kwargs["n_threads"] = threads
        self.models: dict[str | None, Any] = {None: llama_cpp.Llama(model_path=str(base_gguf), **kwargs)}
        if adapter_gguf is not None:
            self.models["adapter_0"] = llama_cpp.Llama(model_path=str(base_gguf), lora_path=str(adapter_gguf),
                                                       **kwargs)

    def logits(self, variant: str | None, ids: Sequence[int]) -> np.ndarray:
        llm = self.models[variant]
        llm.reset()
        llm.eval(list(ids))
        return np.asarray(llm.scores[: len(ids)], dtype=np.float64)

    def close(self) -> None:
        for llm in self.models.values():
            llm.close()
        self.models.clear()


def load_for_eval(base_gguf: str | Path, adapter_gguf: str | Path | None, base_path: str,
                  adapter_dirs: Sequence[str | Path] = (), *, n_ctx: int = 2048, **_: Any):
    """(GGUFVariants, the base's HF tokenizer, adapter names) like ``eval.loss.load_for_eval``."""
    from quantgrid.ml.models import base_info, check_adapter_base, load_tokenizer

    if adapter_dirs and adapter_gguf is None:
        raise EvalError("--gguf with --adapter needs the adapter as GGUF too",
                        hint="pass --gguf-adapter FILE (written by `quantgrid export gguf --adapter DIR`)")
    info = base_info(base_path)
    for d in adapter_dirs:
        check_adapter_base(d, info)
    names = ["adapter_0"] if adapter_gguf is not None else []
    return GGUFVariants(base_gguf, adapter_gguf, n_ctx), load_tokenizer(base_path), names


def completion_losses(model: GGUFVariants, tokenizer, examples: Sequence[Example], *, template: str,
                      system_prompt: str | None, max_length: int, adapters: Sequence[str | None],
                      progress: Callable[[int], None] | None = None, **_: Any):
    """Per-example summed nats over the completion tokens, per variant, as ``LossResult``s."""
    from quantgrid.eval.loss import LossResult

    if max_length > model.n_ctx:
        raise EvalError(f"sequences of {max_length} tokens do not fit the llama.cpp context ({model.n_ctx})",
                        hint="lower --max-length")
    encoded = [encode(tokenizer, ex, template, max_length, system_prompt) for ex in examples]
    out = {}
    for variant in adapters:
        nll, n_tok = [], []
        for enc in encoded:
            labels = np.asarray(enc.labels[1:])
            scored = labels != IGNORE_INDEX
            if not scored.any():
                nll.append(0.0)
                n_tok.append(0)
                continue
            logits = model.logits(variant, enc.input_ids)[:-1][scored]
            logz = np.logaddexp.reduce(logits, axis=-1)
            nll.append(float((logz - logits[np.arange(len(logits)), labels[scored]]).sum()))
            n_tok.append(int(scored.sum()))
            if progress:
                progress(1)
        out[variant] = LossResult(name=variant, nll=nll, n_tokens=n_tok,
                                  extra={"backend": "llama.cpp", "quantization": model.quantization})
    return out


def generate_answers(model: GGUFVariants, tokenizer, examples: Sequence[Example], *, template: str = "qa",
                     system_prompt: str | None = None, adapter: str | None = None, max_new_tokens: int = 128,
                     max_prompt_tokens: int | None = None, progress: Callable[[int], None] | None = None,
                     **_: Any) -> list[str]:
    """Greedy answers from llama.cpp, from the same prompt tokens as the PyTorch path."""
    from quantgrid.eval.generate import prompt_ids, truncate_at_stop

    llm = model.models[adapter]
    stop = {tokenizer.eos_token_id}
    answers = []
    for ex in examples:
        ids = prompt_ids(tokenizer, ex, template, system_prompt)
        if max_prompt_tokens:
            ids = ids[-max_prompt_tokens:]
        budget = max(0, min(max_new_tokens, model.n_ctx - len(ids)))
        out: list[int] = []
        if budget:
            for tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):
                if tok in stop:
                    break
                out.append(tok)
                if len(out) >= budget:
                    break
        answers.append(truncate_at_stop(tokenizer.decode(out, skip_special_tokens=True)))
        if progress:
            progress(1)
    return answers


def backend(cfg) -> tuple[Callable, Callable, Callable]:
    """``(load_for_eval, completion_losses, generate_answers)`` for an eval config whose
    ``gguf`` is set, with the signatures the harness calls."""
    n_ctx = cfg.max_length or 4096  # the harness's default max length is the recipe's (<= 4096)

    def load(base_path: str, adapter_dirs: Sequence[str | Path] = (), **kw: Any):
        return load_for_eval(cfg.gguf, cfg.gguf_adapter, base_path, adapter_dirs, n_ctx=n_ctx, **kw)

    return load, completion_losses, generate_answers
