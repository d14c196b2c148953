"""CLI: ``quantgrid hub gc`` — remove what crashes and refused uploads left in the hub's storage."""

from __future__ import annotations

from typing import Annotated

import typer

from quantgrid.cli.hub import ConfigOpt, DbOpt, StorageOpt, hub_app, hub_settings


def gc(
    grace: Annotated[float | None, typer.Option(
        "--grace", min=0, help="Keep unreferenced blobs and temp dirs younger than this many seconds "
                               "\\[default: gc_grace_seconds, 3600]")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")] = False,
    db: DbOpt = None, storage: StorageOpt = None, config: ConfigOpt = None,
) -> None:
    """Remove unreferenced blobs (local or S3), stale upload temp files, release staging and temp directories.

    Safe while the hub runs: a blob younger than the grace may belong to an upload about to commit and is kept, and staging directories are kept while a job of this machine is running. Every hub start runs the same cleanup.
    """
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.gc import collect
    from quantgrid.hub.server.storage import open_blob_store

    settings = hub_settings(db, storage, config=config)
    database = Database(settings.database_url)
    try:
        report = collect(settings, database, open_blob_store(settings), grace_s=grace, dry_run=dry_run)
    finally:
        database.dispose()
    verb = "would remove" if dry_run else "removed"
    for sha in report.blobs:
        typer.echo(f"{verb} blob {sha}")
    for path in report.staging + report.temp_dirs:
        typer.echo(f"{verb} {path}")
    typer.echo(report.summary().replace("removed", verb, 1))


def register(app: typer.Typer) -> None:
    hub_app.command("gc")(gc)
