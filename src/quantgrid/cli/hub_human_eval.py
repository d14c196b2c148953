"""CLI: ``quantgrid hub human-eval generate|results`` — blind human evaluation, over HTTP.

``generate`` asks the hub (as a maintainer: an admin token) to queue the worker job that
answers a sample of a public benchmark with the base and with the candidate, an accepted
adapter or a published release; maintainers then grade the pairs on the hub's /human-eval
pages. ``results`` prints the aggregated grades anyone may read.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.markup import escape
from rich.table import Table

from quantgrid.cli._common import console
from quantgrid.cli.hub import hub_app
from quantgrid.cli.options import Flags, settings_command
from quantgrid.errors import ConfigError
from quantgrid.hub.contrib_settings import AsJson, Hub
from quantgrid.hub.schemas import HUMAN_EVAL_MAX_SAMPLE, HumanEvalBenchmark
from quantgrid.settings import settings_of, validate

human_eval_app = typer.Typer(name="human-eval", no_args_is_help=True,
                             help="Blind human evaluation: queue answer pairs to grade, read the results.")


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HumanEvalGenerateSettings(_Opts):
    hub: Hub
    adapter: int | None = Field(None, ge=1, description="the accepted adapter to evaluate (its id)")
    release: str | None = Field(None, description="the published release to evaluate (its version, e.g. 2026.49)")
    benchmark: HumanEvalBenchmark = Field("finance-dev", description="the public set the questions come from")
    n: int = Field(8, ge=1, le=HUMAN_EVAL_MAX_SAMPLE, description="how many questions (answer pairs)")
    as_json: AsJson


class HumanEvalResultsSettings(_Opts):
    hub: Hub
    as_json: AsJson


@human_eval_app.command("generate")
@settings_command(Flags(settings_of(HumanEvalGenerateSettings)))
def generate(**given: Any) -> None:
    """Queue the job that answers N benchmark questions with the base and the candidate (maintainers only)."""
    from quantgrid.hub.client import HubClient

    s = validate(HumanEvalGenerateSettings, given, settings_of(HumanEvalGenerateSettings),
                 what="human-eval generate option", hint="see `quantgrid hub human-eval generate --help`")
    if (s.adapter is None) == (s.release is None):
        raise ConfigError("say what to evaluate: exactly one of --adapter ID and --release VERSION",
                          hint="e.g. `quantgrid hub human-eval generate --adapter 12`")
    kind, target = ("adapter", str(s.adapter)) if s.adapter is not None else ("release", s.release)
    with HubClient(s.hub) as client:
        job = client.human_eval_generate(kind, target, benchmark=s.benchmark, n=s.n)
    if s.as_json:
        typer.echo(json.dumps({"job_id": job, "kind": kind, "target": target, "benchmark": s.benchmark, "n": s.n}))
    else:
        console.print(f"queued job {job}: {s.n} answer pairs of {kind} {escape(target)} on {s.benchmark}; "
                      "grade them at /human-eval once the worker has run it", highlight=False)


def _pair(d: dict[str, Any], key: str, fmt: str) -> str:
    v = d.get(key) or {}
    return f"{v['candidate']:{fmt}} / {v['base']:{fmt}}" if "candidate" in v else ""


@human_eval_app.command("results")
@settings_command(Flags(settings_of(HumanEvalResultsSettings)))
def results(**given: Any) -> None:
    """Print the aggregated blind grades of every graded adapter and release (no answers, no grades of one person)."""
    from quantgrid.hub.client import HubClient

    s = validate(HumanEvalResultsSettings, given, settings_of(HumanEvalResultsSettings),
                 what="human-eval results option", hint="see `quantgrid hub human-eval results --help`")
    with HubClient(s.hub) as client:
        got = client.human_eval_results()
    if s.as_json:
        typer.echo(json.dumps(got))
        return
    rows = [(kind, target, t) for kind in ("adapter", "release") for target, t in (got.get(kind) or {}).items()]
    if not rows:
        console.print("nothing has been graded on this hub yet")
        return
    table = Table("candidate", "grades", "pairs", "win rate vs base", "overall (candidate / base)",
                  "risk flagged (candidate / base)", title="human evaluation")
    for kind, target, t in rows:
        dims = t.get("dimensions") or {}
        win = t.get("win_rate")
        table.add_row(f"{kind} {escape(target)}", str(t.get("grades", 0)), str(t.get("pairs", "")),
                      f"{win:.0%}" if win is not None else "", _pair(dims, "overall", ".2f"),
                      _pair(dims, "risk_flag", ".0%"))
    console.print(table)


def register(app: typer.Typer) -> None:
    hub_app.add_typer(human_eval_app)
