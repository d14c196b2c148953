"""CLI: the contributor's network commands — login, logout, whoami, push, status, leaderboard, upvote.

Each one is a thin wrapper over :class:`quantgrid.hub.client.HubClient`; errors from the hub
arrive as typed exceptions and the root app prints them as one line plus a hint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from quantgrid.cli._common import console, err_console

HubOpt = Annotated[str | None, typer.Option(
    "--hub", help="Hub URL \\[default: $QUANTGRID_HUB, else the one you logged in to, else http://127.0.0.1:8080]",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]

_STATUS_STYLE = {"queued": "yellow", "validating": "cyan", "accepted": "bold green", "rejected": "bold red"}


def _client(hub: str | None):
    from quantgrid.hub.client import HubClient

    return HubClient(hub)


def login(
    hub: HubOpt = None,
    token: Annotated[str | None, typer.Option(
        "--token", help="API token from the hub admin \\[default: prompt for it, hidden]", show_default=False)] = None,
) -> None:
    """Check an API token against the hub and save it (mode 0600) for later commands."""
    from quantgrid.errors import AuthError
    from quantgrid.hub.client import HubClient, resolve_hub, save_credentials

    url = resolve_hub(hub)
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


def whoami(hub: HubOpt = None) -> None:
    """Show which user the current token belongs to."""
    with _client(hub) as client:
        me = client.whoami()
        console.print(f"{me.name}{' (admin)' if me.is_admin else ''} on {client.url}", highlight=False)


def push(
    zip_path: Annotated[Path, typer.Argument(metavar="PATH", help="quantgrid_submission_<ts>.zip from `quantgrid "
                                             "package`, an adapter directory, or a zip of one")],
    hub: HubOpt = None,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", help="Reuse a key to retry a push safely \\[default: a new random key]",
        show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload a submission (streamed, with progress) and print its submission id.

    An adapter directory is packaged first, and a zip of one (`zip -r adapter.zip ./adapter`)
    is repackaged, with the same privacy rules as `quantgrid package`.
    """
    import tempfile

    from quantgrid.hub.submit import prepare_push

    with tempfile.TemporaryDirectory(prefix="quantgrid-push-") as tmp:
        plan = prepare_push(zip_path, tmp)
        for line in plan.lines:
            err_console.print(line, highlight=False, markup=False)
        _upload(plan.path, hub, idempotency_key, as_json)


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


def status(
    submission_id: Annotated[int | None, typer.Argument(
        metavar="[ID]", help="Submission id \\[default: list your recent submissions]", show_default=False)] = None,
    hub: HubOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a submission's state (queued, validating, accepted, rejected) and its report."""
    with _client(hub) as client:
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


def leaderboard(
    hub: HubOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many contributors")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Rank contributors: accepted adapters, then impact, then upvotes."""
    with _client(hub) as client:
        board = client.leaderboard(limit)
    if as_json:
        typer.echo(board.model_dump_json())
        return
    table = Table("rank", "contributor", "accepted adapters", "impact", "upvotes", title="quantgrid leaderboard",
                  caption=board.formula)
    for e in board.entries:
        table.add_row(str(e.rank), escape(e.contributor), str(e.accepted), f"{e.impact:+.3f}", str(e.upvotes))
    console.print(table if board.entries else "the leaderboard is empty: no submissions yet")


def upvote(
    adapter_id: Annotated[int, typer.Argument(metavar="ID", help="Accepted adapter id (= its submission id)")],
    hub: HubOpt = None,
) -> None:
    """Upvote someone else's accepted adapter (once)."""
    with _client(hub) as client:
        vote = client.upvote(adapter_id)
    console.print(f"upvoted adapter {vote.adapter_id}; it now has {vote.upvotes} upvote(s)")


def register(app: typer.Typer) -> None:
    panel = "Hub (contributor)"
    for fn in (login, logout, whoami, push, status, leaderboard, upvote):
        app.command(fn.__name__, rich_help_panel=panel)(fn)
