"""registry.yaml: names and versions (a new version only if it beats the current one), local and hub."""

from __future__ import annotations

import json
import zipfile

import pytest
import yaml
from contrib_helpers import make_adapter_dir
from typer.testing import CliRunner

from quantgrid.cli import app
from quantgrid.registry import Accepted, Registry, Scores, assign_versions


def _acc(i, *, name=None, improves=None, loss=2.0, bench="b1", author="ada"):
    return Accepted(id=i, author=author, base_model="tiny", name=name, improves=improves,
                    scores=Scores(hidden_loss=loss, hidden_benchmark=bench, improvement=3.0 - loss))


def test_an_improvement_is_a_new_version_only_if_it_beats_the_current_one():
    entries = assign_versions([
        _acc(1, name="sec-filings", loss=2.0),
        _acc(2, name="sec-filings-v2", improves="sec-filings", loss=1.9),  # beats v1: becomes v2
        _acc(3, improves="sec-filings", loss=1.95),  # worse than v2: its own entry, with why
        _acc(4, improves="sec-filings", loss=1.0, bench="b2"),  # another hidden benchmark: not comparable
        _acc(5, improves="nope", loss=1.0),
        _acc(6, name="sec-filings", loss=1.5),  # the same name without `improves`: not a silent version
    ])
    by_id = {e.id: e for e in entries}
    assert (by_id[1].name, by_id[1].version, by_id[1].current) == ("sec-filings", 1, False)
    assert (by_id[2].name, by_id[2].version, by_id[2].current) == ("sec-filings", 2, True)
    assert by_id[3].name == "adapter-3" and by_id[3].version == 1 and "does not beat it" in by_id[3].note
    assert "different hidden benchmark" in by_id[4].note
    assert "not in the registry" in by_id[5].note
    assert by_id[6].name == "sec-filings-6"
    text = Registry(adapters=entries).to_yaml()
    assert Registry.from_yaml(text).adapters == entries
    assert yaml.safe_load(text)["adapters"][1]["version"] == 2


def test_quantgrid_registry_writes_local_adapters(tmp_path):
    make_adapter_dir(tmp_path / "adapters", name="sec-filings")
    make_adapter_dir(tmp_path / "adapters", name="options")
    out = tmp_path / "registry.yaml"
    res = CliRunner().invoke(app, ["registry", str(tmp_path / "adapters"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    reg = yaml.safe_load(out.read_text())
    assert [a["name"] for a in reg["adapters"]] == ["options", "sec-filings"]
    a = reg["adapters"][0]
    assert a["author"] == "ada" and a["version"] == 1 and a["scores"]["improvement"] == pytest.approx(0.1)
    assert a["scores"]["higher_is_better"] is False and a["release"] is None
    res = CliRunner().invoke(app, ["registry", str(tmp_path / "missing"), "--out", str(out)])
    assert res.exit_code != 0 and "is not a directory" in res.output


def test_the_hub_builds_the_registry_from_accepted_adapters(tmp_path):
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.models import Adapter, Blob, Release, Submission, User
    from quantgrid.hub.server.registry import build_registry
    from quantgrid.hub.server.storage import BlobStore

    db = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    blobs = BlobStore(tmp_path / "blobs")

    def blob(manifest: dict) -> str:
        import io

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("quantgrid.json", json.dumps(manifest))
        return blobs.put_bytes(buf.getvalue())

    shas = [blob({"name": "sec-filings", "base_model": {"name": "tiny"}}),
            blob({"name": "sec-filings-next", "improves": "sec-filings", "base_model": {"name": "tiny"}})]
    with db.write() as s:
        s.add(User(id=1, name="ada"))
        s.flush()
        for i, sha in enumerate(shas, 1):
            s.add(Blob(sha256=sha, size_bytes=1))
            s.flush()
            s.add(Submission(id=i, user_id=1, blob_sha256=sha, filename="x.zip", size_bytes=1, status="accepted"))
            s.flush()
            s.add(Adapter(id=i, user_id=1, blob_sha256=sha, score=0.1 * i,
                          delta_info={"adapter_loss": 2.0 - 0.1 * i, "base_loss": 2.1, "benchmark_id": "hb1"}))
        s.add(Release(version="2026.48", status="published", manifest={"adapters": [{"id": 1}]}))
    reg = build_registry(db, blobs)
    db.dispose()
    assert [(a.name, a.version, a.release, a.author) for a in reg.adapters] == [
        ("sec-filings", 1, "2026.48", "ada"), ("sec-filings", 2, None, "ada")]
    assert reg.adapters[1].scores.hidden_loss == pytest.approx(1.8) and reg.source == "hub"


def test_manifest_fields_are_cached_per_blob_but_a_failed_read_is_not(tmp_path):
    """Blobs never change, so a zip's manifest is read once; a read the store failed is tried again."""
    import io

    from quantgrid.hub.server.registry import _manifest_fields
    from quantgrid.hub.server.storage import BlobStore

    class Flaky(BlobStore):
        opens = 0

        def open(self, sha256):
            self.opens += 1
            if self.opens == 1:
                raise OSError("connection reset")
            return super().open(sha256)

    blobs = Flaky(tmp_path / "blobs")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("quantgrid.json", json.dumps({"name": "sec-filings", "base_model": {"name": "tiny"}}))
    sha = blobs.put_bytes(buf.getvalue())
    assert _manifest_fields(blobs, sha) == (None, None, None)  # the store failed
    assert _manifest_fields(blobs, sha) == ("sec-filings", None, "tiny")  # read again, not a cached failure
    assert _manifest_fields(blobs, sha) == ("sec-filings", None, "tiny") and blobs.opens == 2  # then cached
