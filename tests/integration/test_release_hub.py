"""Releases on a real hub: accepted adapters in the database and blob store -> release job
-> /v1/releases* endpoints, download, rollback, leaderboard impact, the scheduler, the CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time
import zipfile

import pytest
from release_helpers import accept, release_recipe, submission_zips, train_adapters

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from quantgrid.hub.server import create_app  # noqa: E402
from quantgrid.hub.server import releases as HR  # noqa: E402
from quantgrid.hub.server.models import Adapter, Job  # noqa: E402
from quantgrid.hub.settings import HubSettings  # noqa: E402

SUNDAY = dt.datetime(2026, 11, 22, 3, 0, tzinfo=dt.timezone.utc)
RELEASE_FILES = {"adapter_config.json", "adapter_model.safetensors", "quantgrid.json", "release.json",
                 "RELEASE_NOTES.md", "README.md", "chat_template.jinja", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def adapter_zips(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-adapters")
    return submission_zips(train_adapters(tiny_base, release_recipe(tiny_base), root, {"a": (21, 1.0), "b": (22, 1.0), "c": (23, 1.0)}))


@pytest.fixture
def hub(tiny_base, tmp_path, monkeypatch):
    for var in ("QUANTGRID_HUB_CONFIG", "QUANTGRID_HUB_CONFIG_FILE", "QUANTGRID_HUB_RECIPE", "QUANTGRID_HUB_PORT"):
        monkeypatch.delenv(var, raising=False)
    recipe_file = release_recipe(tiny_base).save(tmp_path / "recipe.yaml")
    # The random-init tiny base's general-domain loss moves with any finance training;
    # the OOD gate is tested in test_release_engine.
    settings = HubSettings.load(storage_dir=tmp_path / "hub", recipe=str(recipe_file), worker_enabled=False,
                                benchmark_size=24, ood_tolerance=5.0)
    app = create_app(settings)
    return {"settings": settings, "app": app, "db": app.state.db, "recipe_file": recipe_file}


def test_release_endpoints_download_rollback_and_impact(hub, adapter_zips, tmp_path):
    settings, db = hub["settings"], hub["db"]
    with TestClient(hub["app"]) as client:
        assert client.get("/v1/releases").json() == {"current": None, "items": []}
        assert client.get("/v1/releases/latest").status_code == 404
        nothing = HR.release_now(settings, db, now=SUNDAY)
        assert not nothing.published and "no accepted adapters" in nothing.reason

        accept(hub, "alice", adapter_zips["a"])
        accept(hub, "bob", adapter_zips["b"])
        first = HR.release_now(settings, db, now=SUNDAY)
        assert first.published and first.version == "2026.47", first.reason
        accept(hub, "alice", adapter_zips["c"])
        second = HR.release_now(settings, db, now=SUNDAY + dt.timedelta(days=1), loo=False)
        assert second.published and second.version == "2026.48", second.reason
        assert [a["contributor"] for a in second.manifest["adapters"]] == ["alice", "bob", "alice"]  # cumulative
        assert second.manifest["quality"]["n_items"] > 0 and len(second.manifest["quality"]["retention"]) == 3
        # nothing new since 2026.48: skipped with a message, not published as 2026.48.2
        same = HR.release_now(settings, db, now=SUNDAY + dt.timedelta(days=1, hours=1), loo=False)
        assert not same.published and same.version == "" and "no new accepted adapter since release 2026.48" \
            in same.reason
        # each published release queued its answer pairs for blind grading, behind validations
        with db.read() as s:
            grading = [(j.payload["target"], j.payload["n"], j.priority) for j in s.query(Job).filter(Job.kind == "human_eval")]
        assert sorted(grading) == [("2026.47", settings.human_eval_sample, 200), ("2026.48", settings.human_eval_sample, 200)]

        listing = client.get("/v1/releases").json()
        assert listing["current"] == "2026.48"
        assert [r["version"] for r in listing["items"]] == ["2026.48", "2026.47"]
        latest = client.get("/v1/releases/latest").json()
        assert latest["version"] == "2026.48" and latest["is_current"] and latest["metrics"]["n_adapters"] == 3
        assert client.get("/v1/releases/2026.47").json()["notes"].startswith("# quantgrid release 2026.47")
        assert client.get("/v1/releases/2026.01").status_code == 404
        assert client.get("/v1/releases/..%2F..%2Fetc").status_code in (404, 422)

        resp = client.get("/v1/releases/2026.47/download")
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
            assert set(zf.namelist()) == RELEASE_FILES
            zf.extractall(tmp_path / "dl")
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(settings.recipe.base_model), str(tmp_path / "dl"))

        # leave-one-out impact from the first release reached the leaderboard
        with db.read() as s:
            impacts = {a.id: (a.impact, a.impact_release) for a in s.query(Adapter)}
        assert all(rel == "2026.47" for imp, rel in list(impacts.values())[:2])
        board = {e["contributor"]: e["impact"] for e in client.get("/v1/leaderboard").json()["entries"]}
        assert board["bob"] == pytest.approx(first.manifest["impact"]["bob"], abs=1e-3)

        HR.rollback(settings, db, "2026.47")
        assert client.get("/v1/releases/latest").json()["version"] == "2026.47"
        assert (settings.storage_dir / "releases" / "CURRENT").read_text().strip() == "2026.47"
        from quantgrid.errors import NotFound

        with pytest.raises(NotFound, match="not a published release"):
            HR.rollback(settings, db, "2026.30")


def test_scheduler_catches_up_a_missed_release_and_the_worker_runs_it(hub, adapter_zips):
    from quantgrid.hub.server.jobs import run_worker

    settings = hub["settings"].model_copy(update={"release_schedule": "SUN 03:00"})
    db = hub["db"]
    accept(hub, "alice", adapter_zips["a"])
    tuesday = SUNDAY + dt.timedelta(days=2)
    job_id = HR.schedule_tick(settings, db, now=tuesday)  # the hub was down on Sunday 03:00
    assert job_id is not None
    assert HR.schedule_tick(settings, db, now=tuesday + dt.timedelta(minutes=1)) is None  # once per slot
    with db.read() as s:
        job = s.get(Job, job_id)
        assert job.kind == "release" and job.payload["slot"] == SUNDAY.isoformat()
    assert run_worker(settings, db=db, max_jobs=1) == 1  # the handler registered in jobs.HANDLER_PATHS
    with db.read() as s:
        job = s.get(Job, job_id)
    assert job.status == "done" and job.result["published"], job.error
    # the next slot after the last run (the release was published at the wall-clock time) is due
    # only once it passes
    from quantgrid.merge.schedule import next_due

    last = HR.last_scheduled_run(db)
    nxt = next_due(settings.release_schedule, last, last)
    assert nxt > last and nxt.weekday() == 6 and (nxt.hour, nxt.minute) == (3, 0)
    assert HR.schedule_tick(settings, db, now=nxt - dt.timedelta(minutes=1)) is None
    assert HR.schedule_tick(settings, db, now=nxt + dt.timedelta(minutes=1)) is not None


def test_app_startup_enqueues_the_missed_release(hub):
    settings = hub["settings"].model_copy(update={"release_schedule": "SUN 03:00"})
    with TestClient(create_app(settings)):
        deadline = time.time() + 20
        while time.time() < deadline:
            with hub["db"].read() as s:
                if s.query(Job).filter(Job.kind == "release").count():
                    break
            time.sleep(0.1)
    with hub["db"].read() as s:
        assert s.query(Job).filter(Job.kind == "release").count() == 1
    assert not any(t.name == "hub-release-scheduler" for t in threading.enumerate())  # stopped with the app


def test_release_schedule_setting_is_validated(tmp_path):
    from quantgrid.errors import ConfigError

    with pytest.raises(ConfigError, match="--release-schedule.*not a release schedule"):
        HubSettings.load(storage_dir=tmp_path, release_schedule="someday")
    # weekly on Sunday 03:00 UTC unless the operator turns it off; cron expressions accepted
    assert HubSettings.load(storage_dir=tmp_path).release_schedule == "0 3 * * SUN"
    assert HubSettings.load(storage_dir=tmp_path, release_schedule="off").release_schedule is None
    assert HubSettings.load(storage_dir=tmp_path, release_schedule="30 4 * * MON").release_schedule == "30 4 * * MON"


def test_cli_release_rollback_and_releases_listing(hub, adapter_zips, tmp_path, monkeypatch):
    import uvicorn

    from quantgrid.cli import app as cli

    accept(hub, "alice", adapter_zips["a"])
    monkeypatch.setenv("QUANTGRID_HUB_BENCHMARK_SIZE", "24")
    monkeypatch.setenv("QUANTGRID_HUB_OOD_TOLERANCE", "5.0")
    opts = ["--storage", str(hub["settings"].storage_dir), "--recipe", str(hub["recipe_file"])]
    runner = CliRunner()
    dry = runner.invoke(cli, ["hub", "release", "--dry-run", "--no-impact", *opts])
    assert dry.exit_code == 0, dry.output
    assert "dry run, not published" in dry.output and "alice" in dry.output
    assert not (hub["settings"].storage_dir / "releases" / "CURRENT").exists()
    bad = runner.invoke(cli, ["hub", "release", "--method", "average", *opts])
    assert bad.exit_code == 2 and "--method 'average' is not a merge method" in bad.output
    real = runner.invoke(cli, ["hub", "release", *opts])
    assert real.exit_code == 0 and "published" in real.output, real.output
    version = json.loads((next((hub["settings"].storage_dir / "releases").glob("20*")) / "release.json")
                         .read_text())["version"]
    missing = runner.invoke(cli, ["hub", "rollback", "2026.01", *opts])
    assert missing.exit_code == 1 and "not a published release" in missing.output  # a runtime error
    assert runner.invoke(cli, ["hub", "rollback", version, *opts]).exit_code == 0

    # `quantgrid releases` against a real HTTP server
    from _hub_process import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(hub["app"], host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        out = runner.invoke(cli, ["releases", "--hub", f"http://127.0.0.1:{port}", "--download", "latest",
                                  "--out", str(tmp_path / "rel.zip")], env={"COLUMNS": "200"})
        assert out.exit_code == 0, out.output
        assert version in out.output and "✓" in out.output
        with zipfile.ZipFile(tmp_path / "rel.zip") as zf:
            assert set(zf.namelist()) == RELEASE_FILES
        down = runner.invoke(cli, ["releases", "--hub", f"http://127.0.0.1:{free_port()}"])
        assert down.exit_code == 1 and "cannot reach the hub" in down.output  # a runtime error
    finally:
        server.should_exit = True
        thread.join(timeout=10)
