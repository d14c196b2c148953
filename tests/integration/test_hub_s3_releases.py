"""Releases on S3-compatible storage (``storage_url: s3://bucket/prefix``), against a real
S3-protocol server process on 127.0.0.1 (moto): publish, crash between the upload and the
database commit, download, deploy from the hub, a worker on another host, garbage collection."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile

import pytest
from release_helpers import accept, release_recipe, submission_zips, train_adapters

pytest.importorskip("s3fs")
pytest.importorskip("fastapi")

import httpx  # noqa: E402
from _s3 import new_bucket, s3_endpoint, storage_options  # noqa: E402,F401
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from quantgrid.hub.server import create_app  # noqa: E402
from quantgrid.hub.server import releases as HR  # noqa: E402
from quantgrid.hub.server.gc import collect  # noqa: E402
from quantgrid.hub.server.models import Release  # noqa: E402
from quantgrid.hub.server.storage import ReleaseArchives, open_release_archives  # noqa: E402
from quantgrid.hub.settings import HubSettings  # noqa: E402

SUNDAY = dt.datetime(2026, 11, 22, 3, 0, tzinfo=dt.timezone.utc)


class Killed(BaseException):
    """The hub process dying (kill -9) between two steps."""


@pytest.fixture(scope="module")
def adapter_zips(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("s3-adapters")
    return submission_zips(train_adapters(tiny_base, release_recipe(tiny_base), root, {"a": (21, 1.0), "b": (22, 1.0)}))


def _settings(storage_dir, bucket, endpoint, recipe_file, db_url=None) -> HubSettings:
    return HubSettings.load(storage_dir=storage_dir, recipe=str(recipe_file), worker_enabled=False,
                            benchmark_size=24, ood_tolerance=5.0, db_url=db_url,
                            storage_url=f"s3://{bucket}/hub", storage_options=storage_options(endpoint))


@pytest.fixture
def s3_hub(tiny_base, tmp_path, monkeypatch, s3_endpoint):  # noqa: F811 (fixture imported above)
    for var in ("QUANTGRID_HUB_CONFIG", "QUANTGRID_HUB_CONFIG_FILE", "QUANTGRID_HUB_RECIPE", "QUANTGRID_HUB_PORT"):
        monkeypatch.delenv(var, raising=False)
    recipe_file = release_recipe(tiny_base).save(tmp_path / "recipe.yaml")
    bucket = new_bucket(s3_endpoint)
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    settings = _settings(tmp_path / "hub", bucket, s3_endpoint, recipe_file, db_url)
    app = create_app(settings)
    # Another host: the same database and bucket, its own (empty) local storage directory.
    other = _settings(tmp_path / "other-host", bucket, s3_endpoint, recipe_file, db_url)
    return {"settings": settings, "other": other, "app": app, "db": app.state.db}


class _DiesAtCommit:
    """The hub's database, but the process dies when the release's transaction would start."""

    def __init__(self, db):
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    def write(self):
        raise Killed()


def _release_keys(archives: ReleaseArchives) -> list[str]:
    return sorted(k for k, _ in archives.iter_objects())


@pytest.mark.slow
def test_releases_live_in_s3_whole_served_deployed_and_collected(s3_hub, adapter_zips, tmp_path):
    """Run with: pytest -m slow tests/integration/test_hub_s3_releases.py (about a minute on 2 cores)"""
    from quantgrid.serve.deploy import HubReleaseSource

    settings, db = s3_hub["settings"], s3_hub["db"]
    archives = open_release_archives(settings)
    assert archives is not None
    accept(s3_hub, "alice", adapter_zips["a"])
    accept(s3_hub, "bob", adapter_zips["b"])

    # A crash after the archive reached S3, before the database named it.
    with pytest.raises(Killed):
        HR.release_now(settings, _DiesAtCommit(db), now=SUNDAY, loo=False)
    (orphan,) = _release_keys(archives)
    assert "/releases/2026.47/" in orphan
    with db.read() as s:
        assert s.scalars(select(Release)).all() == []
    # A different build's bytes at that key (what any earlier, unrecorded upload looks like).
    archives.fs.pipe_file(orphan, b"PK not the release anyone published")

    with TestClient(s3_hub["app"]) as client:
        assert client.get("/v1/releases/latest").status_code == 404
        assert client.get("/v1/releases/2026.47/download").status_code == 404  # the orphan is never served

        out = HR.release_now(settings, db, now=SUNDAY, loo=False)
        assert out.published and out.version == "2026.47", out.reason
        with db.read() as s:
            row = s.scalar(select(Release).where(Release.version == "2026.47"))
        assert row.path.startswith("s3://") and row.is_current
        key, version, sha = archives.parse(row.path)
        assert version == "2026.47" and archives.exists(row.path)
        assert not any("/.tmp/" in k for k in _release_keys(archives))  # the temp key went after the copy

        # The download streams the recorded object: it hashes to the name the row gives.
        resp = client.get("/v1/releases/2026.47/download")
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
        assert hashlib.sha256(resp.content).hexdigest() == sha
        with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
            assert {"adapter_config.json", "adapter_model.safetensors", "release.json"} <= set(zf.namelist())

        # A server auto-deploying from the hub fetches the latest release through the same path.
        def forward(req: httpx.Request) -> httpx.Response:
            r = client.request(req.method, req.url.raw_path.decode(), headers=dict(req.headers), content=req.content)
            return httpx.Response(r.status_code, headers=r.headers, content=r.content)

        from quantgrid.hub.client import HubClient

        source = HubReleaseSource("http://hub", tmp_path / "serve-cache",
                                  client=HubClient("http://hub", token="", transport=httpx.MockTransport(forward),
                                                   retries=0))
        ref = source.latest()
        assert ref is not None and ref.version == "2026.47"
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(settings.recipe.base_model), str(ref.path))

    # A worker on another host (no local release directories) gets the current release from S3.
    other = s3_hub["other"]
    assert not (other.storage_dir / "releases").exists()
    d = HR.current_release_dir(other, db)
    assert d is not None and d.is_relative_to(other.storage_dir)
    assert (d / "adapter_model.safetensors").read_bytes() == \
        (settings.storage_dir / "releases" / "2026.47" / "adapter_model.safetensors").read_bytes()
    assert [r.version for r in HR.published_release_dirs(other, db)] == ["2026.47"]
    assert HR.rollback(settings, db, "2026.47").version == "2026.47"  # its object is there

    # gc: young objects are kept (a release may be committing), then only what no row names goes.
    leftover_tmp = f"{archives.prefix}/releases/.tmp/2026.48-1-dead.zip"
    archives.fs.pipe_file(leftover_tmp, b"half of an upload")
    assert collect(settings, db, s3_hub["app"].state.blobs).release_objects == []
    report = collect(settings, db, s3_hub["app"].state.blobs, grace_s=0)
    expected = sorted({orphan, leftover_tmp} - {key})
    assert sorted(report.release_objects) == expected
    assert _release_keys(archives) == [key]
    resp_after = TestClient(s3_hub["app"]).get("/v1/releases/2026.47/download")
    assert hashlib.sha256(resp_after.content).hexdigest() == sha
