"""CLI: `quantgrid alpha check|backtest|score|synth|ops` -- formulaic alphas, offline and safe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, Field, field_validator
from rich.table import Table

from quantgrid.cli._common import console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.errors import ConfigError, DataError
from quantgrid.settings import settings_of, validate

alpha_app = typer.Typer(
    help="Parse, check and backtest formulaic alphas (the WorldQuant 101-alpha language); never runs Python.",
    no_args_is_help=True,
)



class BacktestOptions(BaseModel):
    """The settings of ``alpha backtest`` and ``alpha score``."""

    prices: Path | None = Field(None, description="long-format CSV or Parquet price file: date, ticker, open, high, "
                                "low, close, volume [, vwap, cap, sector, industry, subindustry] (default: the "
                                "seeded synthetic panel)")
    method: str = Field("rank", description="portfolio: 'rank' (dollar-neutral, rank-weighted) or 'quantile' "
                        "(top vs bottom fifth)")
    as_json: bool = Field(False, description="print the full report as JSON", json_schema_extra={"flag": "--json"})

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        from quantgrid.eval.alpha.backtest import METHODS

        if v not in METHODS:
            raise ValueError(f"unknown portfolio method {v!r}; use one of: {', '.join(METHODS)}")
        return v


BACKTEST_FLAGS = Flags(settings_of(BacktestOptions))


def _options(given: dict[str, Any], command: str) -> BacktestOptions:
    return validate(BacktestOptions, given, BACKTEST_FLAGS.settings, what=f"alpha {command} option",
                    hint=f"see `quantgrid alpha {command} --help`")


def _panel(prices: Path | None):
    from quantgrid.eval.alpha.metric import resolve_panel

    return resolve_panel(prices)


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


# An alpha may start with "-" ("-1 * rank(close)"): take it as an argument, not an unknown option.
_EXPR_SETTINGS = {"ignore_unknown_options": True}


@alpha_app.command("check", context_settings=_EXPR_SETTINGS)
def check(expressions: list[str] = typer.Argument(..., help="One or more alpha expressions (quote each one).")) -> None:
    """Parse and check alphas: the canonical form, the data each one reads and the history it needs."""
    from quantgrid.eval.alpha import compile_alpha

    for expr in expressions:
        alpha = compile_alpha(expr)  # an error stops here with the position and a hint
        groups = [f"IndClass.{g}" for g in sorted(alpha.groups)]
        console.print(f"[green]ok[/] {alpha.canonical}\n   reads: {', '.join(sorted(alpha.fields) + groups)}"
                      f"; needs {alpha.lookback} past date(s)", highlight=False, soft_wrap=True)


@alpha_app.command("backtest", context_settings=_EXPR_SETTINGS)
@settings_command(BACKTEST_FLAGS)
def backtest_cmd(
    expressions: list[str] = typer.Argument(..., help="One or more alpha expressions (quote each one)."),
    **given: Any,
) -> None:
    """Daily long-short backtest of each alpha: annualized Sharpe, turnover and IC on next-day returns."""
    from quantgrid.eval.alpha import score_alphas

    o = _options(given, "backtest")
    report = score_alphas(list(expressions), _panel(o.prices), method=o.method)
    _print_report(report, o.as_json)


@alpha_app.command("score")
@settings_command(BACKTEST_FLAGS)
def score_cmd(
    answers: Path = typer.Argument(..., help="Generated answers: a .jsonl file (field 'answer', 'completion' or "
                                   "'output') or a text file with one alpha per line."),
    **given: Any,
) -> None:
    """Score a file of generated alphas: compile rate, backtest success, mean Sharpe / turnover / IC."""
    from quantgrid.eval.alpha import score_alphas

    o = _options(given, "score")
    report = score_alphas(_read_answers(answers), _panel(o.prices), method=o.method)
    _print_report(report, o.as_json)


def _read_answers(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"answers file not found: {path}", hint="give a .jsonl or .txt file of generated alphas")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path} is empty", hint="one alpha per line, or JSONL records with an 'answer' field")
    if path.suffix.lower() != ".jsonl":
        return lines
    out = []
    for i, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not valid JSON ({e.msg})", hint="one JSON object per line") from None
        value = next((rec[k] for k in ("answer", "completion", "output") if isinstance(rec, dict) and k in rec), None)
        if not isinstance(value, str):
            raise DataError(f"{path}:{i}: no 'answer', 'completion' or 'output' text field",
                            hint="each record needs the generated alpha in 'answer'")
        out.append(value)
    return out


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(report))
        return
    table = Table(title=f"alphas on {report['panel']} ({report['method']} portfolio)")
    for col in ("#", "alpha", "sharpe", "turnover", "IC", "status"):
        table.add_column(col, justify="right" if col in ("#", "sharpe", "turnover", "IC") else "left")
    for it in report["items"]:
        status = "[green]ok[/]" if it["backtested"] else f"[red]{it['error']}[/]"
        table.add_row(str(it["index"] + 1), it["expression"][:60], _fmt(it.get("sharpe"), 2),
                      _fmt(it.get("turnover"), 2), _fmt(it.get("ic"), 4), status)
    console.print(table)
    console.print(f"compile rate {report['compile_rate']:.0%} · backtest success {report['backtest_success']:.0%} · "
                  f"mean Sharpe {_fmt(report['sharpe'], 2)} · turnover {_fmt(report['turnover'], 2)} · "
                  f"IC {_fmt(report['ic'], 4)}", highlight=False)


class SynthOptions(BaseModel):
    """The settings of ``alpha synth`` (the arguments of ``synthetic_panel``)."""

    dates: int = Field(500, ge=30, description="number of business days")
    assets: int = Field(50, ge=2, description="number of tickers")
    seed: int = Field(0, description="random seed (the same seed gives the same file)")


@alpha_app.command("synth")
@settings_command(Flags(settings_of(SynthOptions)))
def synth(
    out: Path = typer.Argument(..., help="Where to write the panel (.csv or .parquet)."),
    **given: Any,
) -> None:
    """Write a seeded synthetic OHLCV panel in the long format `--prices` reads (for demos and tests only)."""
    from quantgrid.eval.alpha import synthetic_panel
    from quantgrid.utils import atomic_path

    o = validate(SynthOptions, given, settings_of(SynthOptions), what="alpha synth option",
                 hint="see `quantgrid alpha synth --help`")
    dates, assets, seed = o.dates, o.assets, o.seed

    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"unsupported output type {suffix or '(none)'!r}: {out}", hint="end the path in .csv or .parquet")
    frame = synthetic_panel(n_dates=dates, n_assets=assets, seed=seed).to_frame()
    with atomic_path(out) as tmp:  # a crash leaves no half-written price file
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    console.print(f"wrote {len(frame)} rows ({dates} dates x {assets} tickers) to {out}", highlight=False)


@alpha_app.command("ops")
def ops() -> None:
    """List the operators, their arguments and what they compute."""
    from quantgrid.eval.alpha import ALIASES, OPS

    table = Table(title="alpha operators (also: + - * / ^ < > <= >= == != && || ?:)")
    table.add_column("usage")
    table.add_column("meaning")
    table.add_column("aliases")
    for name, op in sorted(OPS.items()):
        table.add_row(op.usage, op.doc, ", ".join(sorted(a for a, t in ALIASES.items() if t == name)))
    console.print(table)
    console.print("fields: open high low close volume vwap returns cap advN (N-day average dollar volume, volume x vwap, "
                  "e.g. adv20; for share volume write ts_mean(volume, N)); "
                  "groups: IndClass.sector / IndClass.industry / IndClass.subindustry", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(alpha_app, name="alpha")
