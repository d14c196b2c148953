"""Release resolution and auto-deploy: swapping releases between batches without dropping requests."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import zipfile

import httpx
import pytest

from quantgrid.errors import ConfigError, NotFound
from quantgrid.serve.deploy import (
    Deployer,
    DirReleaseSource,
    HubReleaseSource,
    resolve_release,
    unpack_release,
)
from quantgrid.serve.engine import Delta, Done, GenRequest
from quantgrid.serve.router import Router
from quantgrid.serve.sampling import SamplingParams


def make_release(root, version, adapter_dir):
    d = root / version
    shutil.copytree(adapter_dir, d)
    (d / "quantgrid.json").write_text(json.dumps({"release": version}))
    return d


def test_dir_source_picks_the_newest_version(tmp_path, adapters):
    src = DirReleaseSource(tmp_path)
    assert src.latest() is None
    make_release(tmp_path, "2026.9", adapters["bonds"])
    make_release(tmp_path, "2026.10", adapters["crypto"])
    make_release(tmp_path, "2026.10.1", adapters["options"])
    (tmp_path / "notes").mkdir()
    assert src.latest().version == "2026.10.1"  # numeric, not string, order
    assert src.get("2026.9").path == tmp_path / "2026.9"
    with pytest.raises(NotFound):
        src.get("2025.1")


def test_resolve_release_errors(tmp_path, adapters):
    ref, source = resolve_release(str(make_release(tmp_path, "2026.47", adapters["bonds"])), None, tmp_path)
    assert ref.version == "2026.47" and source is None
    with pytest.raises(ConfigError, match="needs --hub"):
        resolve_release("latest", None, tmp_path)
    with pytest.raises(ConfigError, match="neither"):
        resolve_release("last-week", None, tmp_path)
    with pytest.raises(ConfigError, match="not a release directory"):
        resolve_release(str(tmp_path), None, tmp_path)


def _zip(adapter_dir, extra: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in adapter_dir.iterdir():
            if f.is_file():
                zf.write(f, f"release/{f.name}")
        for name, data in extra.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_hub_source_downloads_once_and_keeps_only_allowlisted_files(tmp_path, adapters):
    calls = []
    data = _zip(adapters["bonds"], {"../evil.sh": b"rm -rf /", "release/model.pkl": b"x"})

    built = {"at": "2026-11-22T03:00:00Z"}

    def hub(request: httpx.Request):  # the hub's release endpoints (engineer G's side of the wire)
        calls.append(request.url.path)
        release = {"version": "2026.47", "status": "published", "is_current": True, "created_at": built["at"]}
        if request.url.path == "/v1/releases/latest":
            return httpx.Response(200, json=release)
        if request.url.path == "/v1/releases":
            return httpx.Response(200, json={"current": "2026.47", "items": [release]})
        if request.url.path == "/v1/releases/2026.47/download":
            return httpx.Response(200, content=data)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no such release", "hint": None}})

    from quantgrid.hub.client import HubClient

    client = HubClient("http://hub", token="", transport=httpx.MockTransport(hub), retries=0)
    src = HubReleaseSource("http://hub", tmp_path / "cache", client=client)
    ref = src.latest()
    assert ref.version == "2026.47"
    assert sorted(p.name for p in ref.path.iterdir()) == ["README.md", "adapter_config.json",
                                                          "adapter_model.safetensors", "quantgrid.json"]
    assert src.latest().path == ref.path and calls.count("/v1/releases/2026.47/download") == 1
    # The same version number from a rebuilt hub is another release: downloaded again, cached apart.
    built["at"] = "2026-11-22T04:00:00Z"
    rebuilt = src.latest()
    assert rebuilt.path != ref.path and calls.count("/v1/releases/2026.47/download") == 2
    with pytest.raises(NotFound):
        src.get("2026.1")
    with pytest.raises(ConfigError):
        unpack_release(_zip(ref.path, {}).replace(b"adapter_config", b"adapter_cXnfig"), tmp_path / "x")


def test_deployer_swaps_release_without_dropping_a_running_request(engine, adapters, tmp_path):
    router = Router(engine)
    source = DirReleaseSource(tmp_path)
    make_release(tmp_path, "2026.46", adapters["crypto"])
    deployer = Deployer(engine, router, source, interval_s=0.05)
    assert deployer.check_now() and router.release == "release-2026.46"
    assert not deployer.check_now()  # same version: nothing to do
    params = SamplingParams(temperature=0, max_tokens=150)
    events: list = []
    running = GenRequest(engine.encode("The stock price of"), params, events.append, adapter=router.release)
    engine.submit(running)
    while not any(isinstance(e, Delta) for e in events):
        time.sleep(0.001)
    make_release(tmp_path, "2026.47", adapters["options"])
    deployer.start()  # the polling thread picks the new release up
    deadline = time.time() + 20
    while router.release != "release-2026.47" and time.time() < deadline:
        time.sleep(0.01)
    deployer.stop()
    assert router.release == "release-2026.47" and "release-2026.46" not in engine.adapters
    assert router.resolve("quantgrid").adapter == "release-2026.47"
    done = threading.Event()
    while not isinstance(events[-1], Done):
        done.wait(0.01)
    assert events[-1].finish_reason == "length" and events[-1].completion_tokens == 150  # not dropped
    new_text, _ = engine.generate("The stock price of", SamplingParams(temperature=0, max_tokens=20),
                                  adapter=router.release)
    old_text = "".join(e.text for e in events if isinstance(e, Delta))
    assert not old_text.startswith(new_text)  # new requests get the new release's weights
