"""Evaluating any OpenAI-compatible model by name: ``quantgrid eval --endpoint URL --model NAME``.

The same benchmark and generation metrics as a local evaluation, for a model behind an
API (a ``quantgrid serve``, vLLM, OpenAI itself...), so "our adapter vs GPT-4" is one
command each. Each benchmark item is sent as one chat request whose messages are the
item as our ``messages`` format writes it (system, history, ``Context: …\n\nQuestion: …``),
greedy (temperature 0), through the ``openai`` SDK (retries, typed errors). The answer is
cut where a new turn would start, as local evaluation does. Loss needs the model's
weights, so it is not computed here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from quantgrid.data.types import Example
from quantgrid.errors import ConfigError, EvalError

RESULTS_KIND = "quantgrid-endpoint-eval"


class EndpointMetric(BaseModel):
    score: float | None
    n_scored: int
    higher_is_better: bool
    note: str | None = None


class EndpointResults(BaseModel):
    kind: str = RESULTS_KIND
    version: int = 1
    endpoint: str
    model: str
    benchmark: str
    n_examples: int
    max_new_tokens: int
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    metrics: dict[str, EndpointMetric]
    answers: list[str] = Field(description="the model's answers, in benchmark order")


def messages_of(ex: Example) -> list[dict[str, str]]:
    """The chat request for a benchmark item: our ``messages`` record of it, without the answer."""
    from quantgrid.data.formats import get_format

    return get_format("messages").dump(ex)["messages"][:-1]


def evaluate_endpoint(endpoint: str, model: str, examples: list[Example], metrics: list[str], *,
                      benchmark: str = "", api_key: str | None = None, max_new_tokens: int = 128,
                      concurrency: int = 4, timeout_s: float = 120.0, max_retries: int = 2,
                      progress: Callable[[int], None] | None = None,
                      metric_options: dict[str, Any] | None = None) -> EndpointResults:
    import openai

    from quantgrid.eval.generate import truncate_at_stop
    from quantgrid.eval.metrics import compute_metrics

    client = openai.OpenAI(base_url=endpoint.rstrip("/"), api_key=api_key or "unused", timeout=timeout_s,
                           max_retries=max_retries)
    usage = {"prompt": 0, "completion": 0}

    def ask(ex: Example) -> str:
        try:
            r = client.chat.completions.create(model=model, messages=messages_of(ex), max_tokens=max_new_tokens,
                                               temperature=0)
        except openai.APIStatusError as e:
            raise EvalError(f"{endpoint} answered HTTP {e.status_code}: {e.message}",
                            hint="check --model (GET /v1/models lists them) and the API key") from None
        except openai.APIConnectionError as e:
            raise EvalError(f"cannot reach {endpoint}: {e.__cause__ or e}",
                            hint="check --endpoint: a URL ending in /v1") from None
        if r.usage is not None:
            usage["prompt"] += r.usage.prompt_tokens
            usage["completion"] += r.usage.completion_tokens
        if progress is not None:
            progress(1)
        return truncate_at_stop(r.choices[0].message.content or "")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        answers = list(pool.map(ask, examples))
    seconds = time.perf_counter() - t0
    results = compute_metrics(metrics, examples, answers, **(metric_options or {}))
    return EndpointResults(
        endpoint=endpoint, model=model, benchmark=benchmark, n_examples=len(examples), max_new_tokens=max_new_tokens,
        seconds=round(seconds, 3), prompt_tokens=usage["prompt"], completion_tokens=usage["completion"],
        metrics={n: EndpointMetric(score=m.score, n_scored=m.n_scored, higher_is_better=m.higher_is_better,
                                   note=m.note) for n, m in results.items()},
        answers=answers)


def run_from_cli(cfg, endpoint: str, model: str | None, api_key_env: str | None,
                 progress: Callable[[int], None] | None = None,
                 metric_options: dict[str, Any] | None = None) -> EndpointResults:
    """``quantgrid eval --endpoint``: the eval settings that apply to an API, and the results file."""
    from quantgrid.eval.harness import LOSS, load_benchmark
    from quantgrid.utils import atomic_write_text

    if not model:
        raise ConfigError("--endpoint needs --model", hint="name the model to ask for (GET URL/models lists them)")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"--endpoint {endpoint!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8000/v1")
    local = [f for f in ("adapter", "gguf", "gguf_adapter", "train_data") if getattr(cfg, f, None)]
    if local or cfg.write_into_adapter:
        names = ", ".join("--" + f.replace("_", "-") for f in local + (["write_into_adapter"]
                                                                         if cfg.write_into_adapter else []))
        raise ConfigError(f"{names} cannot be used with --endpoint: the model runs behind the API",
                          hint="leave them out, or evaluate the local adapter without --endpoint")
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(f"--api-key-env {api_key_env}: the variable is not set", hint=f"export {api_key_env}=...")
    names = [m for m in cfg.generation_metrics if m != LOSS]
    if not names:
        raise ConfigError("--endpoint computes generation metrics only, and none is selected",
                          hint="leave --metric out (all), or name generation metrics")
    examples = load_benchmark(cfg.benchmark, cfg.limit)
    res = evaluate_endpoint(endpoint, model, examples, names, benchmark=cfg.benchmark, api_key=key,
                            max_new_tokens=cfg.max_new_tokens, concurrency=min(cfg.batch_size, 8), progress=progress,
                            metric_options=metric_options)
    if cfg.output is not None:
        atomic_write_text(Path(cfg.output), res.model_dump_json(indent=2) + "\n")
    return res
