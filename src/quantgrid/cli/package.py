"""CLI: ``quantgrid package`` (build the submission zip) and ``quantgrid check`` (the checklist)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from quantgrid.cli._common import console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.hub.contrib_settings import PackageSettings
from quantgrid.settings import settings_of, validate


@settings_command(Flags(settings_of(PackageSettings)))
def package(
    adapter_dir: Annotated[Path, typer.Argument(help="The adapter directory `quantgrid train` wrote.")],
    **given: Any,
) -> None:
    """Package an adapter as quantgrid_submission_<ts>.zip: weights, config, manifest, training log and
    aggregate eval numbers only; prints every file left out and why.

    Prints READY FOR UPLOAD!, the file name and its sha256; then `quantgrid push FILE`.
    """
    from quantgrid.hub.submit import package as build

    s = validate(PackageSettings, given, settings_of(PackageSettings), what="package option",
                 hint="see `quantgrid package --help`")
    result = build(adapter_dir, s.author, s.dataset_desc, s.out, quiet=True, name=s.name, improves=s.improves)
    console.print("[bold green]READY FOR UPLOAD![/]")
    console.print(f"File: {result.path.name}", highlight=False)
    console.print(f"Hash: {result.sha256}", highlight=False)
    console.print(f"[dim]{len(result.files)} files in {result.path}[/]", highlight=False)
    for line in result.summary_lines()[1:]:
        console.print(line, highlight=False, markup=False)
    if result.stale:
        console.print(f"[yellow]warning:[/] changed since the manifest was written: {', '.join(result.stale)}",
                      highlight=False)


def check(
    adapter_dir: Annotated[Path, typer.Argument(help="The adapter directory to check before packaging.")],
) -> None:
    """Run the contributor checklist: files, >= 500 examples supplied, a clean >= 50-item benchmark,
    an improvement, the out-of-domain check, documented data sources, a copyright declaration
    and a complete registry entry.

    Exits 1 when any item fails.
    """
    from quantgrid.hub.submit import run_checklist

    items = run_checklist(adapter_dir)
    for item in items:
        mark = "[green]✓[/]" if item.ok else "[red]✗[/]"
        console.print(f"{mark} [bold]{item.name}[/]: {item.reason}", highlight=False, soft_wrap=True)
    failed = [i for i in items if not i.ok]
    if failed:
        console.print(f"{len(failed)} of {len(items)} checks failed.", highlight=False)
        raise typer.Exit(1)
    console.print(f"All {len(items)} checks passed: `quantgrid package {adapter_dir} --author ... "
                  "--dataset-desc ...`", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("package", rich_help_panel="Contribute")(package)
    app.command("check", rich_help_panel="Contribute")(check)
