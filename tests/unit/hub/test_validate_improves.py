"""The hub's validation holds a submission's ``improves`` to the registry's version rule:
it must name an adapter the hub already accepted under that name."""

from __future__ import annotations

import hashlib
import json

from malicious import generator as g

from quantgrid.adapter import BaseShape
from quantgrid.hub.server import jobs
from quantgrid.hub.server import submissions as subs


def _zip(settings, *, name: str, improves: str | None = None, seed: int = 0) -> bytes:
    import numpy as np

    from quantgrid.adapter import expected_lora_shapes

    base = BaseShape.from_dir(settings.recipe.base_model)
    rng = np.random.default_rng(seed)
    tensors = {k: (rng.standard_normal(s) * 0.01).astype(np.float32)
               for k, s in expected_lora_shapes(settings.recipe, base).items()}
    files = g.good_files(weights=g.st_bytes(tensors), recipe=settings.recipe, base=base)
    manifest = json.loads(files[g.MANIFEST])
    manifest.update(name=name, improves=improves)
    files[g.MANIFEST] = json.dumps(manifest).encode()
    return g.zip_bytes(files)


def _push(client, auth, data: bytes) -> int:
    r = client.post("/v1/submissions", content=data, headers={
        **auth, "X-Content-SHA256": hashlib.sha256(data).hexdigest(), "Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_improves_must_name_an_accepted_adapter(hub):
    from quantgrid.hub.server.improves import improves_check

    settings, app, client, tokens = hub
    db, blobs = app.state.db, app.state.blobs
    first = _push(client, tokens["alice"], _zip(settings, name="sec-filings"))
    # Accepted by hand: the rule is about names, not about how the first version was judged.
    subs.start_validation(db, first)
    subs.record_verdict(db, settings, first, accepted=True, report={"stage": "accepted", "check": "all"}, score=0.1)
    # A claim on a name the hub does not hold (a typo, or a name only the contributor knows).
    dangling = _push(client, tokens["bob"], _zip(settings, name="mine", improves="sec-filing", seed=1))
    handlers = jobs.resolve_handlers(["validate"])
    while jobs.run_one(db, settings, handlers, "test-worker"):  # the first's job finds it decided: skipped
        pass
    out = client.get(f"/v1/submissions/{dangling}", headers=tokens["bob"]).json()
    assert out["status"] == "rejected"
    report = out["report"]
    assert (report["stage"], report["check"]) == ("static", "improves")
    assert "'sec-filing'" in report["message"] and "sec-filings (v1)" in report["hint"]
    # Naming the accepted one passes the rule (the rest of validation then judges the weights).
    assert improves_check(db, blobs, _zip(settings, name="v2", improves="sec-filings", seed=2)) is None
    # No claim at all passes too; the accepted adapter is unaffected.
    assert improves_check(db, blobs, _zip(settings, name="other", seed=3)) is None
    assert client.get(f"/v1/submissions/{first}", headers=tokens["alice"]).json()["status"] == "accepted"


def test_improves_of_a_hub_without_adapters_is_rejected(hub):
    from quantgrid.hub.server.improves import improves_check

    settings, app, _client, _tokens = hub
    report = improves_check(app.state.db, app.state.blobs, _zip(settings, name="x", improves="anything"))
    assert report is not None and report["check"] == "improves" and "none yet" in report["hint"]
