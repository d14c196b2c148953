"""CLI: `quantgrid demo` — the whole loop, offline, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ConfigDict, Field

from quantgrid.cli.options import Flags, settings_command
from quantgrid.settings import settings_of, validate


class DemoSettings(BaseModel):
    """The arguments of :func:`quantgrid.demo.run_demo` that the command line sets."""

    model_config = ConfigDict(extra="forbid")

    workdir: Path | None = Field(None, description="keep everything here (default: a temporary directory)")
    quick: bool = Field(False, description="smoke version: the test-size base and fewer steps")


@settings_command(Flags(settings_of(DemoSettings)))
def demo(**given: Any) -> None:
    """Run all four journeys on the embedded defaults: train, evaluate, push, validate, release, serve, export."""
    from quantgrid.demo import run_demo

    s = validate(DemoSettings, given, settings_of(DemoSettings), what="demo option", hint="see `quantgrid demo --help`")
    workdir, quick = s.workdir, s.quick
    try:
        run_demo(workdir, quick=quick)
    except KeyboardInterrupt:
        # The servers are stopped by the demo's context managers on the way out.
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("demo", rich_help_panel="Start here")(demo)
