"""Every hostile submission kind is rejected by stage 1 with the right check, and safely."""

from __future__ import annotations

import os
import sys
import tracemalloc
import zipfile

import pytest

from malicious import generator as g
from quantgrid.adapter import check_submission
from quantgrid.archive import Caps, read_zip
from quantgrid.errors import ValidationError


def _snapshot(root) -> set[str]:
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


# Every file this process opens for writing while the flag is up, anywhere on disk (audit
# hooks see builtins.open, io.open and os.open alike; they cannot be removed, so gate them).
_WRITES: list[str] = []
_WATCHING = [False]


def _audit(event: str, args: tuple) -> None:
    if _WATCHING[0] and event == "open" and len(args) >= 3:
        path, mode, flags = args[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
            (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing:
            _WRITES.append(str(path))


sys.addaudithook(_audit)


def test_the_good_submission_passes():
    sub = g.good_submission()
    checked = check_submission(sub, g.RECIPE, g.BASE)
    assert set(checked.files) == {"adapter_config.json", "adapter_model.safetensors", "quantgrid.json", "README.md"}
    assert checked.manifest.author == "mallory"
    assert len(checked.tensor_norms) == 2 * 4 * g.BASE.num_layers


@pytest.mark.parametrize("kind", sorted(g.KINDS))
def test_each_malicious_kind_is_rejected_with_its_reason(kind, tmp_path, monkeypatch):
    canary = tmp_path / "canary"
    monkeypatch.chdir(tmp_path)  # anything written relative to cwd would land here and be seen
    build, expected = g.KINDS[kind]
    data = build(str(canary))
    before = _snapshot(tmp_path)
    _WRITES.clear()
    tracemalloc.start()
    _WATCHING[0] = True
    try:
        with pytest.raises(ValidationError) as err:
            check_submission(data, g.RECIPE, g.BASE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        _WATCHING[0] = False
        tracemalloc.stop()
    assert _WRITES == [], f"stage 1 opened files for writing: {_WRITES}"
    assert err.value.check == expected, f"{kind}: {err.value.check}: {err.value.message}"
    assert err.value.message  # a reason a person can read
    assert not canary.exists()
    assert _snapshot(tmp_path) == before, "stage 1 wrote a file"
    # Memory stays bounded by the input plus a small working set, whatever the archive claims.
    assert peak < 4 * len(data) + (16 << 20), f"{kind}: peak {peak} bytes"


def test_pickle_payload_is_real_but_never_executed(tmp_path):
    """The payload would create the canary if unpickled; stage 1 must not unpickle it."""
    import pickle

    canary = tmp_path / "canary"
    payload = g.pickle_payload(str(canary))
    for data in (g.KINDS["pickle_bin"][0](str(canary)), g.KINDS["pickle_renamed"][0](str(canary))):
        with pytest.raises(ValidationError):
            check_submission(data, g.RECIPE, g.BASE)
    assert not canary.exists()
    pickle.loads(payload)  # prove the generator's payload is live: unpickling does create it
    assert canary.exists()


def test_claimed_bomb_is_rejected_before_decompressing(monkeypatch):
    """A header claiming gigabytes is refused on the claim; no entry is opened at all."""
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or real_open(self, *a, **k))
    with pytest.raises(ValidationError) as err:
        check_submission(g.claimed_huge_bomb(), g.RECIPE, g.BASE)
    assert err.value.check == "archive.bomb"
    assert opened == []


def _read_zip_refused_with_peak(data: bytes, caps: Caps):
    """Read ``data`` expecting a ValidationError; return it and the peak traced memory."""
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError) as err:
            read_zip(data, allowed=lambda n: True, caps=caps)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return err, peak


def test_streaming_read_stops_at_the_cap_even_when_ratio_checks_are_off():
    """With the ratio check disabled, the 64 MB bomb is still cut off at the entry cap."""
    caps = Caps(max_ratio=1e12, max_small_entry_bytes=1 << 20)
    data = g.real_deflate_bomb(size=64 << 20)
    err, peak = _read_zip_refused_with_peak(data, caps)
    assert err.value.check in ("archive.bomb", "archive.too_large")
    assert peak < 8 << 20


def test_lying_declared_size_reads_at_most_the_declared_bytes():
    caps = Caps(max_ratio=1e12)
    data = g.lying_size_bomb()
    err, peak = _read_zip_refused_with_peak(data, caps)
    assert err.value.check == "archive.corrupt"  # the CRC of the truncated read fails
    assert peak < 8 << 20  # nowhere near the 32 MB the stream would expand to


def test_auto_mapping_and_foreign_name_are_noted_never_used():
    cfg = g.good_config(auto_mapping={"base_model_class": "EvilModel", "parent_library": "evil"},
                        base_model_name_or_path="evil/remote-code-model")
    checked = check_submission(g.zip_bytes(g.good_files(config=cfg)), g.RECIPE, g.BASE)
    assert any("auto_mapping ignored" in n for n in checked.notes)
    assert any("evil/remote-code-model" in n and "ignored" in n for n in checked.notes)
