"""`quantgrid base`: describe a base; refuse an unknown tiny size."""

from __future__ import annotations

from typer.testing import CliRunner

from quantgrid.cli import app


def test_base_info_prints_name_and_fingerprint(tiny_base):
    from quantgrid.ml.models import base_info

    result = CliRunner().invoke(app, ["base", "info", tiny_base])
    assert result.exit_code == 0, result.output
    info = base_info(tiny_base)
    assert "quantgrid-tiny-test" in result.output and info.fingerprint in result.output
    assert "llama" in result.output


def test_base_info_on_a_missing_path_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["base", "info", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "not a model directory" in result.output and "hint:" in result.output


def test_base_tiny_rejects_an_unknown_size(tmp_path):
    result = CliRunner().invoke(app, ["base", "tiny", str(tmp_path / "b"), "--size", "huge"])
    assert result.exit_code == 2 and "--size" in result.output and "test" in result.output
    assert not (tmp_path / "b").exists()
