"""CLI: ``quantgrid hub gc`` — remove what crashes and refused uploads left in the hub's storage."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import BaseModel, Field

from quantgrid.cli.hub import HUB_STORAGE_FLAGS, hub_app, load_hub
from quantgrid.cli.options import Flags, settings_command
from quantgrid.hub.settings import HubSettings
from quantgrid.settings import settings_of


class GcOptions(BaseModel):
    dry_run: bool = Field(False, description="list what would be removed; remove nothing")


GRACE_FLAGS = Flags(settings_of(HubSettings, only=("gc_grace_seconds",)), panel=HUB_STORAGE_FLAGS.panel)


@settings_command(Flags(settings_of(GcOptions)), GRACE_FLAGS, HUB_STORAGE_FLAGS)
def gc(**given: Any) -> None:
    """Remove unreferenced blobs and release objects (local or S3), stale upload temp files, release staging and temp directories.

    Safe while the hub runs: a blob younger than the grace may belong to an upload about to commit and is kept, and staging directories are kept while a job of this machine is running. Every hub start runs the same cleanup.
    """
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.gc import collect
    from quantgrid.hub.server.storage import open_blob_store

    dry_run = bool(given.pop("dry_run", False))
    settings = load_hub(**given)
    database = Database(settings.database_url)
    try:
        report = collect(settings, database, open_blob_store(settings), dry_run=dry_run)
    finally:
        database.dispose()
    verb = "would remove" if dry_run else "removed"
    for sha in report.blobs:
        typer.echo(f"{verb} blob {sha}")
    for path in report.release_objects + report.staging + report.temp_dirs:
        typer.echo(f"{verb} {path}")
    typer.echo(report.summary().replace("removed", verb, 1))


def register(app: typer.Typer) -> None:
    hub_app.command("gc")(gc)
