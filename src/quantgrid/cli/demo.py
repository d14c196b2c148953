"""CLI: `quantgrid demo` — the whole loop, offline, in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    workdir: Path = typer.Option(None, "--workdir", help="Keep everything here (default: a temporary directory)."),
    quick: bool = typer.Option(False, "--quick", help="Smoke version: the test-size base and fewer steps."),
) -> None:
    """Run all four journeys on the embedded defaults: train, evaluate, push, validate, release, serve, export."""
    from quantgrid.demo import run_demo

    try:
        run_demo(workdir, quick=quick)
    except KeyboardInterrupt:
        # The servers are stopped by the demo's context managers on the way out.
        raise typer.Exit(130) from None


def register(app: typer.Typer) -> None:
    app.command("demo", rich_help_panel="Start here")(demo)
