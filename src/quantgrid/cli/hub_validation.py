"""CLI: ``quantgrid hub worker`` (run validation/release jobs) and ``quantgrid hub rotate-benchmark``."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer

from quantgrid.cli._common import console, err_console
from quantgrid.cli.hub import BaseModelOpt, ConfigOpt, DbOpt, RecipeOpt, StorageOpt, hub_app, hub_settings


def worker(
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="Job kinds to take (repeatable): validate, release [default: all with a handler]")] = None,
    max_jobs: Annotated[int | None, typer.Option("--max-jobs", min=1, help="Stop after this many jobs.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run the next waiting job, if any, then exit.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")] = "info",
    db: DbOpt = None, storage: StorageOpt = None, recipe: RecipeOpt = None,
    base_model: BaseModelOpt = None, config: ConfigOpt = None,
) -> None:
    """Run the job worker: validate submissions (static checks, proof of loss on the hidden benchmark, duplicates, trial merge) until Ctrl-C.

    Run as many as you like, on as many machines as share the database: jobs are claimed atomically, a crashed worker's job is retried, and a job that keeps failing stops after job_max_attempts with a report.
    """
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.jobs import default_worker_id, resolve_handlers, run_one, run_worker

    settings = hub_settings(db, storage, recipe, base_model, config)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = resolve_handlers(kind or None)
    if not handlers:
        raise typer.BadParameter(f"no handler for job kind(s) {', '.join(kind or [])}", param_hint="--kind")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker_id = default_worker_id()
    err_console.print(f"worker {worker_id}: kinds {', '.join(handlers)}, db {settings.database_url}, "
                      f"base {settings.recipe.base_model}", highlight=False)
    try:
        if once:  # one job if one is waiting, else nothing: for cron and scripts
            ran = int(run_one(Database(settings.database_url), settings, handlers, worker_id))
        else:
            ran = run_worker(settings, handlers, stop, worker_id=worker_id, max_jobs=max_jobs)
    except KeyboardInterrupt:
        stop.set()
        ran = None
    if ran is not None:
        console.print(f"worker {worker_id} ran {ran} job(s)", highlight=False)


def rotate_benchmark(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    db: DbOpt = None, storage: StorageOpt = None, recipe: RecipeOpt = None,
    base_model: BaseModelOpt = None, config: ConfigOpt = None,
) -> None:
    """Make a new benchmark secret, so the hidden benchmark's templated items are all new.

    Do it whenever the hidden items may have leaked (e.g. by probing); later validations and releases use the new items.
    """
    from quantgrid.hub.benchmark import rotate_secret

    settings = hub_settings(db, storage, recipe, base_model, config)
    if not yes and not typer.confirm(f"Replace the benchmark secret in {settings.storage_dir}?"):
        raise typer.Exit(1)
    old, new = rotate_secret(settings)
    console.print(f"benchmark rotated: {old} -> {new} ({settings.benchmark_size} templated items)", highlight=False)


def register(app: typer.Typer) -> None:
    hub_app.command("worker")(worker)
    hub_app.command("rotate-benchmark")(rotate_benchmark)
