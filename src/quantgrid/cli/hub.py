"""CLI: ``quantgrid hub ...`` — run and administer a hub.

Every hub command takes the same settings options. To add a command to this group from
another CLI module (e.g. ``hub worker``, ``hub release``), reuse them like this::

    from quantgrid.cli.hub import ConfigOpt, DbOpt, StorageOpt, RecipeOpt, BaseModelOpt, hub_app, hub_settings

    def worker(db: DbOpt = None, storage: StorageOpt = None, recipe: RecipeOpt = None,
               base_model: BaseModelOpt = None, config: ConfigOpt = None) -> None:
        '''Run the validation worker.'''
        settings = hub_settings(db, storage, recipe, base_model, config)
        ...

    def register(app):            # called from quantgrid.cli (the root app)
        hub_app.command("worker")(worker)

Commands added to ``hub_app`` at any time before the CLI runs show up under ``quantgrid hub``.
Precedence of settings: these flags > ``QUANTGRID_HUB_*`` environment > ``--config`` YAML > defaults.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quantgrid.cli._common import console, err_console

hub_app = typer.Typer(
    name="hub",
    help="Run and administer a hub: serve the API, manage users, validate and release.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
user_app = typer.Typer(name="user", help="Manage hub users and their API tokens.", no_args_is_help=True)
hub_app.add_typer(user_app)

_PANEL = "Hub settings"
DbOpt = Annotated[str | None, typer.Option(
    "--db", help="SQLAlchemy database URL \\[default: sqlite under --storage]; e.g. postgresql+psycopg://u@h/db",
    rich_help_panel=_PANEL, show_default=False)]
StorageOpt = Annotated[Path | None, typer.Option(
    "--storage", help="Directory for blobs, the benchmark secret and releases \\[default: ./quantgrid-hub]",
    rich_help_panel=_PANEL, show_default=False)]
RecipeOpt = Annotated[Path | None, typer.Option(
    "--recipe", help="The hub's recipe YAML (see `quantgrid recipe show`).", rich_help_panel=_PANEL,
    show_default=False)]
BaseModelOpt = Annotated[str | None, typer.Option(
    "--base-model", help="Base model id or local path; the recipe's other settings stay standard.",
    rich_help_panel=_PANEL, show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of hub settings (any HubSettings field).", rich_help_panel=_PANEL,
    show_default=False)]


def hub_settings(db: str | None = None, storage: Path | None = None, recipe: Path | None = None,
                 base_model: str | None = None, config: Path | None = None, **overrides: Any):
    """Resolve the shared hub options (plus any extra field overrides) into ``HubSettings``."""
    from quantgrid.errors import ConfigError
    from quantgrid.hub.settings import HubSettings
    from quantgrid.recipe import Recipe

    if recipe is not None and base_model is not None:
        raise ConfigError("--recipe and --base-model both given",
                          hint="set base_model inside the recipe file, or pass only --base-model")
    settings = HubSettings.load(config=config, db_url=db, storage_dir=storage,
                                recipe=str(recipe) if recipe is not None else None, **overrides)
    if base_model is not None:
        local = Path(base_model).expanduser()
        name = str(local.resolve()) if local.exists() else base_model
        new = Recipe.from_dict({**settings.recipe.model_dump(mode="json"), "base_model": name}, source="--base-model")
        settings = settings.model_copy(update={"recipe": new})
    return settings


def _open_db(settings):
    from quantgrid.hub.server.db import Database

    return Database(settings.database_url)


# ---- hub serve ----


@hub_app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Interface to listen on \\[default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port \\[default: 8080]")] = None,
    worker: Annotated[bool | None, typer.Option(
        "--worker/--no-worker", help="Also run a job worker thread in this process \\[default: on]")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")] = "info",
    release_schedule: Annotated[str | None, typer.Option(
        "--release-schedule", help='Release automatically every week at this UTC time, e.g. "SUN 03:00"; '
                                   "a release missed while the hub was down runs at startup \\[default: off]")] = None,
    db: DbOpt = None, storage: StorageOpt = None, recipe: RecipeOpt = None,
    base_model: BaseModelOpt = None, config: ConfigOpt = None,
) -> None:
    """Run the hub's HTTP API (OpenAPI docs at /docs) until Ctrl-C."""
    import uvicorn

    from quantgrid.hub.server import create_app

    settings = hub_settings(db, storage, recipe, base_model, config, host=host, port=port, worker_enabled=worker,
                            release_schedule=release_schedule)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    err_console.print(f"hub: recipe {settings.recipe.hash()} (base {settings.recipe.base_model}), "
                      f"db {settings.database_url}, worker {'on' if settings.worker_enabled else 'off'}",
                      highlight=False)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level.lower(),
                timeout_graceful_shutdown=5)


# ---- hub user ... ----


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ -)")],
    admin: Annotated[bool, typer.Option("--admin", help="May see every submission's full report")] = False,
    db: DbOpt = None, storage: StorageOpt = None, config: ConfigOpt = None,
) -> None:
    """Create a user and print their API token (shown once; only its hash is stored)."""
    from quantgrid.hub.server.auth import add_user

    token = add_user(_open_db(hub_settings(db, storage, config=config)), name, admin=admin)
    err_console.print(f"created {'admin ' if admin else ''}user [bold]{name}[/]; "
                      "their token (shown once, keep it secret):")
    typer.echo(token)


@user_app.command("token")
def user_token(
    name: Annotated[str, typer.Argument(help="Existing user name")],
    db: DbOpt = None, storage: StorageOpt = None, config: ConfigOpt = None,
) -> None:
    """Issue another API token for an existing user (also re-enables a revoked user)."""
    from quantgrid.hub.server.auth import issue_token

    token = issue_token(_open_db(hub_settings(db, storage, config=config)), name)
    err_console.print(f"new token for [bold]{name}[/] (shown once):")
    typer.echo(token)


@user_app.command("revoke")
def user_revoke(
    name: Annotated[str, typer.Argument(help="User whose tokens to revoke")],
    db: DbOpt = None, storage: StorageOpt = None, config: ConfigOpt = None,
) -> None:
    """Revoke every API token of a user; their requests get 401 from now on."""
    from quantgrid.hub.server.auth import revoke_user

    n = revoke_user(_open_db(hub_settings(db, storage, config=config)), name)
    console.print(f"revoked {n} token(s) of {name}")


@user_app.command("list")
def user_list(db: DbOpt = None, storage: StorageOpt = None, config: ConfigOpt = None) -> None:
    """List users: name, admin, whether they hold a live token."""
    from quantgrid.hub.server.auth import list_users

    table = Table("name", "admin", "active", "created")
    for u in list_users(_open_db(hub_settings(db, storage, config=config))):
        table.add_row(u["name"], "yes" if u["admin"] else "", "yes" if u["active"] else "revoked",
                      u["created_at"].strftime("%Y-%m-%d %H:%M"))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app)
