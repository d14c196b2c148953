"""Atomic writes: all or nothing, with the permissions a plain write would have."""

from __future__ import annotations

import os
import stat

import pytest

from quantgrid.utils import atomic_dir, atomic_path, atomic_write_text


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_and_dirs_get_umask_permissions_not_mkstemps_0600(tmp_path, umask_022):
    assert _mode(atomic_write_text(tmp_path / "a.txt", "x")) == 0o644
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"y")
    assert _mode(tmp_path / "b.bin") == 0o644
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("z")
    assert _mode(tmp_path / "d") == 0o755


def test_secret_mode_holds(tmp_path, umask_022):
    assert _mode(atomic_write_text(tmp_path / "secret", "s", mode=0o600)) == 0o600


def test_failure_leaves_old_content_and_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        raise RuntimeError("crash")
    assert not (tmp_path / "d").exists() and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
