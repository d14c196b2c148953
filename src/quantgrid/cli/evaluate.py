"""CLI: ``quantgrid eval`` — adapter vs base (and out of domain) -> results.json + REPORT.md.

The flags mirror LocoLLM's ``scripts/evaluate.py`` (``--adapter``, ``--benchmark``,
``--output``); without ``--adapter`` the base is evaluated alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, Field
from rich.markup import escape

from quantgrid.cli._common import console, err_console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.eval.harness import EvalConfig
from quantgrid.settings import settings_of, validate


class EvalInputs(BaseModel):
    """Inputs of ``quantgrid eval`` that are not evaluation settings (they never enter results.json)."""

    prices: Path | None = Field(None, description="price panel for the alpha metrics (alpha_backtest, "
                                "alpha_sharpe): long CSV/Parquet with date, ticker, open, high, low, close, volume "
                                "(default: a seeded synthetic panel)")
    endpoint: str | None = Field(None, description="evaluate the model behind this OpenAI-compatible URL (ending in "
                                 "/v1) instead of a local one: generation metrics only (see quantgrid.eval.endpoint)")
    model: str | None = Field(None, description="with --endpoint: the model name to ask for")
    api_key_env: str | None = Field(None, description="with --endpoint: environment variable holding its API key")


INPUT_FLAGS = Flags(settings_of(EvalInputs))


@settings_command(Flags(settings_of(EvalConfig)), INPUT_FLAGS)
def evaluate(
    list_metrics: bool = typer.Option(False, "--list-metrics", is_eager=True, help="List the metrics and exit.",
                                      callback=lambda v: _list_metrics() if v else None),
    **given: Any,
) -> None:
    """Evaluate an adapter against its base: proof of loss, generation metrics, out-of-domain check, verdict.

    Example: quantgrid eval --adapter ./my_adapter --benchmark builtin:finance-dev --output results.json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from quantgrid.errors import ConfigError
    from quantgrid.eval.harness import run_eval

    prices = given.pop("prices", None)
    if prices is not None and not Path(prices).is_file():
        raise ConfigError(f"--prices: {prices} is not a file", hint="pass a CSV or Parquet price panel")
    remote = {k: given.pop(k, None) for k in ("endpoint", "model", "api_key_env")}
    table = settings_of(EvalConfig)
    cfg = validate(EvalConfig, given, table, what="eval settings", hint="see `quantgrid eval --help`")
    if remote["endpoint"] or remote["model"]:
        return _evaluate_endpoint(cfg, prices, **remote)
    output, adapter, write_into_adapter = cfg.output, cfg.adapter, cfg.write_into_adapter

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        def factory(desc: str, total: int):
            task = bar.add_task(desc, total=total)
            return lambda n: bar.advance(task, n)

        ev = run_eval(cfg, progress=factory, metric_options={"prices": prices} if prices else None,
                      on_warning=lambda w: err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False))
    _print_results(ev.results)
    from quantgrid.eval.harness import report_path

    where = [str(output), str(report_path(output))]
    if write_into_adapter and adapter is not None:
        where.append(str(adapter / "eval"))
    console.print(f"Results written to {', '.join(where)}", highlight=False, markup=False)


def _evaluate_endpoint(cfg: EvalConfig, prices, endpoint: str | None, model: str | None,
                       api_key_env: str | None) -> None:
    from rich.table import Table

    from quantgrid.errors import ConfigError
    from quantgrid.eval.endpoint import run_from_cli

    if not endpoint:
        raise ConfigError("--model needs --endpoint", hint="pass --endpoint URL (ending in /v1) too")
    res = run_from_cli(cfg, endpoint, model, api_key_env, metric_options={"prices": prices} if prices else None)
    table = Table("metric", "score", title=escape(f"{model} at {endpoint} on {cfg.benchmark} ({res.n_examples} items)"))
    for name, m in res.metrics.items():
        table.add_row(escape(name), "n/a" if m.score is None else f"{m.score:.4f}")
    console.print(table)
    if cfg.output is not None:
        console.print(f"Results written to {cfg.output}", highlight=False, markup=False)


def _print_results(r) -> None:
    """The run's table, verdict and diagnoses, from its EvalResults."""
    from rich.table import Table

    has_adapter = r.adapter is not None
    table = Table(title=escape(f"{r.adapter or 'base'} on {r.benchmark} ({r.n_examples} items)"))
    table.add_column("metric")
    table.add_column("base", justify="right")
    if has_adapter:
        table.add_column("adapter", justify="right")
        table.add_column("change", justify="right")

    def fmt(x) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    loss = r.loss
    row = ["loss (nats/token, lower is better)", fmt(r.base_loss)]
    if has_adapter:
        ci = loss.delta_ci
        row += [fmt(r.adapter_loss), f"{loss.delta:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
                if loss.delta is not None else "n/a"]
    table.add_row(*row)
    if r.ood:
        o = r.ood
        row = ["out-of-domain loss", fmt(o.base.mean_nats_per_token)]
        if has_adapter:
            change = o.relative_change
            row += [fmt(o.adapter.mean_nats_per_token), f"{change:+.1%}" if change is not None else "n/a"]
        table.add_row(*row)
    requested = r.settings.metrics_requested
    not_applicable = []
    for name, m in r.metrics.items():
        if name not in requested and m.base.score is None and (m.adapter is None or m.adapter.score is None):
            not_applicable.append(name)  # asked for by default, not by name: one line below the table
            continue
        row = [escape(name), fmt(m.base.score)]
        if has_adapter:
            imp = m.improvement
            row += [fmt(m.adapter.score if m.adapter else None), f"{imp:+.1%}" if imp is not None else "n/a"]
        table.add_row(*row)
    console.print(table)
    if not_applicable:
        console.print(f"[dim]n/a on this benchmark: {', '.join(not_applicable)}[/]", highlight=False)
    v = r.verdict
    if v is not None:
        color = "green" if v.passed else "red"
        console.print(f"[bold {color}]verdict: {'PASS' if v.passed else 'FAIL'}[/]")
        for reason in v.reasons:
            console.print(f"  - {reason}", highlight=False, markup=False)
    for d in r.diagnoses:
        console.print(f"[yellow]diagnosis:[/] {escape(str(d))}", highlight=False)


def _list_metrics() -> None:
    from quantgrid.eval.metrics import all_metrics

    console.print("loss: proof of loss, mean cross-entropy per completion token (always computed)", highlight=False)
    for m in all_metrics().values():
        console.print(f"{m.name}: {m.description}", highlight=False)
    raise typer.Exit()


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(evaluate)
