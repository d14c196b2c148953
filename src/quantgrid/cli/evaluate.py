"""CLI: ``quantgrid eval`` — adapter vs base (and out of domain) -> results.json + REPORT.md.

The flags mirror LocoLLM's ``scripts/evaluate.py`` (``--adapter``, ``--benchmark``,
``--output``); without ``--adapter`` the base is evaluated alone.
"""

from __future__ import annotations

from pathlib import Path

import typer

from quantgrid.cli._common import console, err_console


def evaluate(
    benchmark: str = typer.Option(..., "--benchmark", "-b", help="Benchmark: JSON/JSONL file or builtin:NAME "
                                  "(e.g. builtin:finance-dev)."),
    adapter: Path = typer.Option(None, "--adapter", "-a", help="Adapter directory. Without it the base is "
                                 "evaluated alone."),
    output: Path = typer.Option(Path("results.json"), "--output", "-o", help="results.json to write "
                                "(REPORT.md is written beside it)."),
    metric: list[str] = typer.Option(None, "--metric", "-m", help="Metric to compute (repeatable; default: all). "
                                     "`--metric loss` alone skips generation. `quantgrid eval --list-metrics`."),
    primary: str = typer.Option("loss", "--primary-metric", help="Metric reported in LocoLLM's "
                                "adapter_score / base_model_score / improvement fields."),
    ood: str = typer.Option("builtin:general-ood", "--ood", help="Out-of-domain set for the forgetting check "
                            "('none' skips it)."),
    base_model: str = typer.Option(None, "--base-model", help="Base model id or directory (default: the one "
                                   "the adapter was trained from)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Longest generated answer, in tokens."),
    limit: int = typer.Option(None, "--limit", help="Evaluate only the first N benchmark items."),
    write_into_adapter: bool = typer.Option(False, "--write-into-adapter", help="Also write eval/{benchmark.jsonl,"
                                            "results.json,REPORT.md} into the adapter and update its manifest."),
    ood_threshold: float = typer.Option(0.05, "--ood-threshold", help="Largest allowed relative rise of the "
                                        "out-of-domain loss (0.05 = 5%)."),
    patterns: str = typer.Option(None, "--patterns", help="Pattern-compliance regexes: a preset (qi) or a JSON "
                                 "file with {\"must\": [...], \"must_not\": [...]}."),
    prices: Path = typer.Option(None, "--prices", exists=True, dir_okay=False, help="Price panel for the alpha "
                                "metrics (alpha_backtest, alpha_sharpe): long CSV/Parquet with date, ticker, open, "
                                "high, low, close, volume. Default: a seeded synthetic panel."),
    train_data: str = typer.Option(None, "--train-data", help="Your training data, to check the benchmark does "
                                   "not overlap it (stays on this machine)."),
    batch_tokens: int = typer.Option(None, "--batch-tokens", help="Padded tokens per loss batch (default 8192; "
                                     "lower it if memory runs out)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per generation batch."),
    max_length: int = typer.Option(None, "--max-length", help="Longest scored sequence (default: the recipe's "
                                   "max_seq_length)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1... (default: cuda when available)."),
    four_bit: bool = typer.Option(None, "--4bit/--no-4bit", help="Load the base in 4-bit NF4 (default: on "
                                  "for CUDA with bitsandbytes)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap confidence interval."),
    list_metrics: bool = typer.Option(False, "--list-metrics", is_eager=True, help="List the metrics and exit.",
                                      callback=lambda v: _list_metrics() if v else None),
) -> None:
    """Evaluate an adapter against its base: proof of loss, generation metrics, out-of-domain check, verdict.

    Example: quantgrid eval --adapter ./my_adapter --benchmark builtin:finance-dev --output results.json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from quantgrid.eval.harness import EvalConfig, run_eval
    from quantgrid.recipe import format_validation_error

    settings = dict(benchmark=benchmark, adapter=adapter, output=output, metrics=list(metric or []),
                    primary_metric=primary, ood=None if (ood or "").lower() in ("", "none") else ood,
                    base_model=base_model, max_new_tokens=max_new_tokens, limit=limit,
                    write_into_adapter=write_into_adapter, ood_threshold=ood_threshold, patterns=patterns,
                    train_data=train_data, batch_size=batch_size, max_length=max_length, device=device,
                    load_in_4bit=four_bit, seed=seed)
    if batch_tokens is not None:
        settings["batch_tokens"] = batch_tokens
    from pydantic import ValidationError

    from quantgrid.errors import ConfigError

    try:
        cfg = EvalConfig(**settings)
    except ValidationError as e:
        flags = {k: "--" + k.replace("_", "-") for k in settings} | {"metrics": "--metric", "load_in_4bit": "--4bit"}
        raise ConfigError(format_validation_error(e, flags), hint="see `quantgrid eval --help`") from None

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        def factory(desc: str, total: int):
            task = bar.add_task(desc, total=total)
            return lambda n: bar.advance(task, n)

        ev = run_eval(cfg, progress=factory, metric_options={"prices": prices} if prices else None,
                      on_warning=lambda w: err_console.print(f"[yellow]warning:[/] {w}", highlight=False))
    _print_results(ev.results)
    from quantgrid.eval.harness import report_path

    where = [str(output), str(report_path(output))]
    if write_into_adapter and adapter is not None:
        where.append(str(adapter / "eval"))
    console.print(f"Results written to {', '.join(where)}", highlight=False)


def _print_results(r) -> None:
    """The run's table, verdict and diagnoses, from its EvalResults."""
    from rich.table import Table

    has_adapter = r.adapter is not None
    table = Table(title=f"{r.adapter or 'base'} on {r.benchmark} ({r.n_examples} items)")
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
        row = [name, fmt(m.base.score)]
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
            console.print(f"  - {reason}", highlight=False)
    for d in r.diagnoses:
        console.print(f"[yellow]diagnosis:[/] {d}", highlight=False)


def _list_metrics() -> None:
    from quantgrid.eval.metrics import all_metrics

    console.print("loss: proof of loss, mean cross-entropy per completion token (always computed)", highlight=False)
    for m in all_metrics().values():
        console.print(f"{m.name}: {m.description}", highlight=False)
    raise typer.Exit()


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(evaluate)
