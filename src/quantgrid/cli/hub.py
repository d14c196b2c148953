"""CLI: ``quantgrid hub ...`` — run and administer a hub.

Every hub command's settings are fields of :class:`quantgrid.hub.settings.HubSettings`, and
the flags are generated from them (:mod:`quantgrid.cli.options`). To add a command to this
group from another CLI module (e.g. ``hub worker``, ``hub release``)::

    from quantgrid.cli.hub import HUB_FLAGS, hub_app, load_hub
    from quantgrid.cli.options import settings_command

    @settings_command(HUB_FLAGS)
    def worker(**given) -> None:
        '''Run the validation worker.'''
        settings = load_hub(**given)
        ...

    def register(app):            # called from quantgrid.cli (the root app)
        hub_app.command("worker")(worker)

A command that needs only where the hub's data lives uses ``HUB_STORAGE_FLAGS``.
Commands added to ``hub_app`` at any time before the CLI runs show up under ``quantgrid hub``.
Precedence of settings: flags > ``QUANTGRID_HUB_*`` environment > ``--config`` YAML > defaults.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, Field
from rich.markup import escape
from rich.table import Table

from quantgrid.cli._common import console, err_console, run_server
from quantgrid.cli.options import Flags, settings_command
from quantgrid.hub.settings import HubSettings
from quantgrid.settings import settings_of

hub_app = typer.Typer(
    name="hub",
    help="Run and administer a hub: serve the API, manage users, validate and release.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
user_app = typer.Typer(name="user", help="Manage hub users and their API tokens.", no_args_is_help=True)
hub_app.add_typer(user_app)

_PANEL = "Hub settings"
HUB_FLAGS = Flags(settings_of(HubSettings), panel=_PANEL)
HUB_STORAGE_FLAGS = Flags(settings_of(HubSettings, only=("db_url", "storage_dir", "config_file")), panel=_PANEL)


def load_hub(**given: Any) -> HubSettings:
    """The hub flags the user set (by field name) -> HubSettings (with env and ``--config``)."""
    return HubSettings.load(config=given.pop("config_file", None), **given)


def hub_settings(db: str | None = None, storage: Path | None = None, recipe: Path | str | None = None,
                 base_model: str | None = None, config: Path | None = None, **overrides: Any) -> HubSettings:
    """Resolve the shared hub options (plus any extra field overrides) into ``HubSettings``."""
    return load_hub(db_url=db, storage_dir=storage, recipe=str(recipe) if recipe is not None else None,
                    base_model=base_model, config_file=config, **overrides)


def _open_db(settings):
    from quantgrid.hub.server.db import Database

    return Database(settings.database_url)


# ---- hub serve ----


@hub_app.command("serve")
@settings_command(HUB_FLAGS)
def serve(**given: Any) -> None:
    """Run the hub's HTTP API (OpenAPI docs at /docs) until Ctrl-C."""
    from quantgrid.hub.server import create_app

    settings = load_hub(**given)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    err_console.print(f"hub: recipe {settings.recipe.hash()} (base {settings.recipe.base_model}), "
                      f"db {settings.database_url}, worker {'on' if settings.worker_enabled else 'off'}",
                      highlight=False, markup=False)
    run_server(app, host=settings.host, port=settings.port, log_level=settings.log_level,
               timeout_graceful_shutdown=5)


# ---- hub user ... ----


class UserAddOptions(BaseModel):
    admin: bool = Field(False, description="may see every submission's full report")


@user_app.command("add")
@settings_command(Flags(settings_of(UserAddOptions)), HUB_STORAGE_FLAGS)
def user_add(name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ -)")], **given: Any) -> None:
    """Create a user and print their API token (shown once; only its hash is stored)."""
    from quantgrid.hub.server.auth import add_user

    admin = bool(given.pop("admin", False))

    token = add_user(_open_db(load_hub(**given)), name, admin=admin)
    err_console.print(f"created {'admin ' if admin else ''}user [bold]{escape(name)}[/]; "
                      "their token (shown once, keep it secret):")
    typer.echo(token)


@user_app.command("token")
@settings_command(HUB_STORAGE_FLAGS)
def user_token(name: Annotated[str, typer.Argument(help="Existing user name")], **given: Any) -> None:
    """Issue another API token for an existing user (also re-enables a revoked user)."""
    from quantgrid.hub.server.auth import issue_token

    token = issue_token(_open_db(load_hub(**given)), name)
    err_console.print(f"new token for [bold]{escape(name)}[/] (shown once):")
    typer.echo(token)


@user_app.command("revoke")
@settings_command(HUB_STORAGE_FLAGS)
def user_revoke(name: Annotated[str, typer.Argument(help="User whose tokens to revoke")], **given: Any) -> None:
    """Revoke every API token of a user; their requests get 401 from now on."""
    from quantgrid.hub.server.auth import revoke_user

    n = revoke_user(_open_db(load_hub(**given)), name)
    console.print(f"revoked {n} token(s) of {name}", highlight=False, markup=False)


@user_app.command("list")
@settings_command(HUB_STORAGE_FLAGS)
def user_list(**given: Any) -> None:
    """List users: name, admin, whether they hold a live token."""
    from quantgrid.hub.server.auth import list_users

    table = Table("name", "admin", "active", "created")
    for u in list_users(_open_db(load_hub(**given))):
        table.add_row(escape(u["name"]), "yes" if u["admin"] else "", "yes" if u["active"] else "revoked",
                      u["created_at"].strftime("%Y-%m-%d %H:%M"))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app)
