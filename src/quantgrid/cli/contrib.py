"""CLI: the contributor's network commands — login, logout, whoami, push, status, leaderboard, upvote.

Each one is a thin wrapper over :class:`quantgrid.hub.client.HubClient`; errors from the hub
arrive as typed exceptions and the root app prints them as one line plus a hint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from quantgrid.cli._common import console, err_console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.hub.contrib_settings import (
    HubTarget,
    LeaderboardSettings,
    LoginSettings,
    PushSettings,
    StatusSettings,
)
from quantgrid.settings import settings_of, validate


def _settings(model: type[BaseModel], command: str, given: dict[str, Any]) -> Any:
    return validate(model, given, settings_of(model), what=f"{command} option",
                    hint=f"see `quantgrid {command} --help`")

_STATUS_STYLE = {"queued": "yellow", "validating": "cyan", "accepted": "bold green", "rejected": "bold red"}


def _client(hub: str | None):
    from quantgrid.hub.client import HubClient

    return HubClient(hub)


@settings_command(Flags(settings_of(LoginSettings)))
def login(**given: Any) -> None:
    """Check an API token against the hub and save it (mode 0600) for later commands."""
    from quantgrid.errors import AuthError
    from quantgrid.hub.client import HubClient, resolve_hub, save_credentials

    s = _settings(LoginSettings, "login", given)
    token = s.token
    url = resolve_hub(s.hub)
    if token is None:
        token = typer.prompt(f"API token for {url}", hide_input=True).strip()
    if not token:
        raise AuthError("no token given", hint="paste the token printed by `quantgrid hub user add NAME`")
    with HubClient(url, token) as client:
        me = client.whoami()
    path = save_credentials(url, token)
    console.print(f"logged in to {url} as [bold]{me.name}[/]{' (admin)' if me.is_admin else ''}; "
                  f"token saved to {path}", highlight=False)


def logout() -> None:
    """Forget the saved hub token."""
    from quantgrid.hub.client import credentials_path, delete_credentials

    path = credentials_path()
    console.print(f"removed {path}" if delete_credentials() else "not logged in (no saved token)", highlight=False)


@settings_command(Flags(settings_of(HubTarget)))
def whoami(**given: Any) -> None:
    """Show which user the current token belongs to."""
    with _client(_settings(HubTarget, "whoami", given).hub) as client:
        me = client.whoami()
        console.print(f"{me.name}{' (admin)' if me.is_admin else ''} on {client.url}", highlight=False)


@settings_command(Flags(settings_of(PushSettings)))
def push(
    zip_path: Annotated[Path, typer.Argument(metavar="PATH", help="quantgrid_submission_<ts>.zip from `quantgrid "
                                             "package`, an adapter directory, or a zip of one")],
    **given: Any,
) -> None:
    """Upload a submission (streamed, with progress) and print its submission id.

    An adapter directory is packaged first, and a zip of one (`zip -r adapter.zip ./adapter`)
    is repackaged, with the same privacy rules as `quantgrid package`.
    """
    import tempfile

    from quantgrid.hub.submit import prepare_push

    s = _settings(PushSettings, "push", given)
    with tempfile.TemporaryDirectory(prefix="quantgrid-push-") as tmp:
        plan = prepare_push(zip_path, tmp)
        for line in plan.lines:
            err_console.print(line, highlight=False, markup=False)
        _upload(plan.path, s.hub, s.idempotency_key, s.as_json)


def _upload(zip_path: Path, hub: str | None, idempotency_key: str | None, as_json: bool) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from quantgrid.utils import sha256_file

    sha = sha256_file(zip_path)
    with _client(hub) as client, Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=err_console, transient=True,
    ) as bar:
        task = bar.add_task(f"uploading {zip_path.name}", total=zip_path.stat().st_size)
        sub = client.push(zip_path, sha256=sha, idempotency_key=idempotency_key,
                          progress=lambda n: bar.advance(task, n))
    if as_json:
        typer.echo(sub.model_dump_json())
        return
    note = " (already submitted; nothing new uploaded)" if sub.duplicate else ""
    console.print(f"submission [bold]{sub.id}[/] {sub.status}{note}\nsha256 {sub.sha256}\n"
                  f"follow it with: quantgrid status {sub.id}", highlight=False)


def _print_report(report: dict) -> None:
    for key in ("stage", "check", "message"):
        if report.get(key) is not None:
            console.print(f"  {key}: {report[key]}", highlight=False, markup=False)
    numbers = report.get("numbers") or {}
    for k, v in numbers.items():
        console.print(f"  {k}: {v}", highlight=False, markup=False)
    for d in report.get("diagnoses") or []:
        console.print(f"  - {d}", highlight=False, markup=False)
    if report.get("hint"):
        console.print(f"  [yellow]hint:[/] {escape(str(report['hint']))}", highlight=False)


@settings_command(Flags(settings_of(StatusSettings)))
def status(
    submission_id: Annotated[int | None, typer.Argument(
        metavar="[ID]", help="Submission id \\[default: list your recent submissions]", show_default=False)] = None,
    **given: Any,
) -> None:
    """Show a submission's state (queued, validating, accepted, rejected) and its report."""
    s = _settings(StatusSettings, "status", given)
    as_json = s.as_json
    with _client(s.hub) as client:
        if submission_id is None:
            items = client.submissions()
            if as_json:
                typer.echo(json.dumps([s.model_dump(mode="json") for s in items]))
                return
            table = Table("id", "status", "score", "file", "submitted")
            for s in items:
                table.add_row(str(s.id), f"[{_STATUS_STYLE[s.status]}]{s.status}[/]",
                              "" if s.score is None else f"{s.score:+}", escape(s.filename),
                              s.created_at.strftime("%Y-%m-%d %H:%M"))
            console.print(table if items else "no submissions yet; push one with `quantgrid push ZIP`")
            return
        sub = client.submission(submission_id)
    if as_json:
        typer.echo(sub.model_dump_json())
        return
    console.print(f"submission {sub.id} by {escape(sub.owner)}: [{_STATUS_STYLE[sub.status]}]{sub.status}[/]"
                  + ("" if sub.score is None else f" (loss improvement {sub.score:+} nats/token)"), highlight=False)
    console.print(f"file {sub.filename}, {sub.size_bytes} bytes, sha256 {sub.sha256}", highlight=False, markup=False)
    if sub.report:
        console.print("report:")
        _print_report(sub.report)
    elif sub.status in ("queued", "validating"):
        console.print("validation has not finished; check again later")


@settings_command(Flags(settings_of(LeaderboardSettings)))
def leaderboard(**given: Any) -> None:
    """Rank contributors: accepted adapters, then impact, then upvotes."""
    s = _settings(LeaderboardSettings, "leaderboard", given)
    with _client(s.hub) as client:
        board = client.leaderboard(s.limit)
    if s.as_json:
        typer.echo(board.model_dump_json())
        return
    table = Table("rank", "contributor", "accepted adapters", "impact", "upvotes", title="quantgrid leaderboard",
                  caption=board.formula)
    for e in board.entries:
        table.add_row(str(e.rank), escape(e.contributor), str(e.accepted), f"{e.impact:+.3f}", str(e.upvotes))
    console.print(table if board.entries else "the leaderboard is empty: no submissions yet")


@settings_command(Flags(settings_of(HubTarget)))
def upvote(
    adapter_id: Annotated[int, typer.Argument(metavar="ID", help="Accepted adapter id (= its submission id)")],
    **given: Any,
) -> None:
    """Upvote someone else's accepted adapter (once)."""
    with _client(_settings(HubTarget, "upvote", given).hub) as client:
        vote = client.upvote(adapter_id)
    console.print(f"upvoted adapter {vote.adapter_id}; it now has {vote.upvotes} upvote(s)")


def register(app: typer.Typer) -> None:
    panel = "Hub (contributor)"
    for fn in (login, logout, whoami, push, status, leaderboard, upvote):
        app.command(fn.__name__, rich_help_panel=panel)(fn)
