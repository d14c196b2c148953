"""CLI: ``quantgrid hub release``, ``quantgrid hub rollback VERSION`` and ``quantgrid releases``.

``hub release`` and ``hub rollback`` run on the hub machine against its database and
storage (the shared hub settings options); ``releases`` asks any hub over HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, Field
from rich.table import Table

from quantgrid.cli._common import console, err_console
from quantgrid.cli.hub import HUB_FLAGS, hub_app, load_hub
from quantgrid.cli.options import Flags, settings_command
from quantgrid.hub.contrib_settings import ReleasesSettings
from quantgrid.settings import settings_of, validate

_METHOD_NAMES = "svd (exact factor-space, default), cat, ties, dare_linear, dare_ties, median, trimmed_mean"


class ReleaseOptions(BaseModel):
    """How ``hub release`` merges (the hub's own settings are HubSettings)."""

    dry_run: bool = Field(False, description="build and evaluate, print the verdict, publish nothing")
    method: str = Field("svd", description=f"merge method: {_METHOD_NAMES}")
    rank: int | None = Field(None, ge=1, le=4096, description="rank of the release adapter (default: adaptive, 99% "
                             "of the update's energy, at most 256)")
    weighting: str = Field("fit", description="fit (weights fitted on half the hidden benchmark), equal, sum, or "
                           "impact (proportional to each adapter's hub-measured loss improvement)")
    density: float | None = Field(None, ge=0.0, le=1.0, description="ties / dare: fraction of delta-W entries kept")
    trim: float | None = Field(None, ge=0.0, le=0.5, description="trimmed_mean: fraction cut at each end per "
                               "coordinate")
    impact: bool = Field(True, description="measure each contributor's leave-one-out impact")


RELEASE_FLAGS = Flags(settings_of(ReleaseOptions), panel="Release")


@settings_command(RELEASE_FLAGS, HUB_FLAGS)
def release(**given: Any) -> None:
    """Merge every accepted adapter into release YYYY.WW, gate it against the current release, publish it."""
    from quantgrid.errors import ConfigError
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.releases import release_now
    from quantgrid.merge.methods import METHODS

    o = validate(ReleaseOptions, {k: given.pop(k) for k in list(given) if k in RELEASE_FLAGS.settings},
                 RELEASE_FLAGS.settings, what="release option", hint="see `quantgrid hub release --help`")
    dry_run, method, rank, weighting, density, trim, impact = (o.dry_run, o.method, o.rank, o.weighting, o.density,
                                                              o.trim, o.impact)
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not a merge method", hint=f"choose one of: {_METHOD_NAMES}")
    from quantgrid.merge.release import WEIGHTINGS

    if weighting not in WEIGHTINGS:
        raise ConfigError(f"--weighting {weighting!r} is not known", hint=f"use one of {', '.join(WEIGHTINGS)}")
    options = {k: v for k, v in (("density", density), ("trim", trim)) if v is not None}
    settings = load_hub(**given)
    with console.status("releasing ...") as status:
        def log(msg: str) -> None:
            status.update(msg)
            err_console.print(f"[dim]{msg}[/]", highlight=False)

        out = release_now(settings, Database(settings.database_url), dry_run=dry_run, method=method, rank=rank,
                          weighting=weighting, loo=impact, log_fn=log, options=options)
    _print_outcome(out)
    if not out.published and not out.dry_run and out.manifest:
        raise typer.Exit(1)  # the gate refused: a script should notice


def _print_outcome(out) -> None:
    m = out.manifest
    if not m:
        console.print(out.reason)
        return
    verdict = ("[bold green]published[/]" if out.published else
               "[yellow]dry run, not published[/]" if out.dry_run else "[bold red]not published[/]")
    console.print(f"release [bold]{out.version}[/]: {verdict} — {out.reason}", highlight=False)
    table = Table("adapter", "contributor", "weight", "merge error", title=f"{len(m['adapters'])} adapter(s), "
                  f"{m['method']} to rank {m['rank']}")
    for a in m["adapters"]:
        table.add_row(a["id"], a["contributor"], f"{a['weight']:.4f}", f"{a['merge_error']:.2e}")
    console.print(table)
    met = m.get("metrics") or {}
    if met:
        b = met["benchmark"]
        console.print(f"hidden benchmark: {b['previous']:.4f} -> {b['new']:.4f} nats/token ({b['delta']:+.4f} vs "
                      f"{met['against']}); improvement over base {met['improvement_over_base']:+.4f}", highlight=False)
    for person, value in sorted((m.get("impact") or {}).items(), key=lambda kv: -(kv[1] or 0)):
        console.print(f"impact of {person}: {value:+.4f} nats/token", highlight=False)
    if out.path is not None:
        console.print(f"release directory: {out.path}", highlight=False)


@settings_command(HUB_FLAGS)
def rollback(
    version: Annotated[str, typer.Argument(metavar="VERSION", help="A published release, e.g. 2026.47")],
    **given: Any,
) -> None:
    """Put an earlier published release back in service (servers pick it up from /v1/releases/latest)."""
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.releases import rollback as do_rollback

    settings = load_hub(**given)
    r = do_rollback(settings, Database(settings.database_url), version)
    console.print(f"release [bold]{r.version}[/] is in service again", highlight=False)


@settings_command(Flags(settings_of(ReleasesSettings)))
def releases(**given: Any) -> None:
    """List a hub's published releases, newest first; the one in service is marked."""
    from quantgrid.hub.client import HubClient

    s = validate(ReleasesSettings, given, settings_of(ReleasesSettings), what="releases option",
                 hint="see `quantgrid releases --help`")
    download, out, as_json = s.download, s.out, s.as_json
    with HubClient(s.hub) as client:
        listing = client.releases()
        saved = None
        if download is not None:
            target = out or Path(f"quantgrid-release-{download}.zip")
            saved = client.download_release(download, target)
    if as_json:
        typer.echo(listing.model_dump_json())
    elif not listing.items:
        console.print("this hub has not published a release yet")
    else:
        table = Table("version", "in service", "published (UTC)", "adapters", "benchmark loss", "vs previous",
                      title="quantgrid releases")
        for r in listing.items:
            b = (r.metrics or {}).get("benchmark") or {}
            n = (r.metrics or {}).get("n_adapters", "")
            table.add_row(r.version, "✓" if r.is_current else "",
                          r.published_at.strftime("%Y-%m-%d %H:%M") if r.published_at else "",
                          str(n), f"{b['new']:.4f}" if b.get("new") is not None else "",
                          f"{b['delta']:+.4f}" if b.get("delta") is not None else "")
        console.print(table)
    if saved is not None:
        err_console.print(f"saved {saved}", highlight=False)


def register(app: typer.Typer) -> None:
    hub_app.command("release")(release)
    hub_app.command("rollback")(rollback)
    app.command("releases", rich_help_panel="Hub (contributor)")(releases)
