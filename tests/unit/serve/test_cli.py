"""`quantgrid serve` flag errors: one clear line and a hint, exit code 2, before any model loads."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from quantgrid.cli import app


@pytest.mark.parametrize("args,env,message", [
    ([], {}, "--base is required"),
    (["--base", "b", "--adapter", "foo"], {}, "is not NAME=DIR"),
    (["--base", "b", "--adapter", "a=x", "--adapter", "a=y"], {}, "given twice"),
    (["--base", "b", "--release", "latest"], {}, "needs --hub"),
    (["--base", "b", "--release", "last-week"], {}, "neither a directory"),
    (["--base", "b", "--router", "magic"], {}, "--router"),
    (["--base", "b", "--local-timeout", "0"], {}, "--local-timeout:"),
    (["--upstream", "nourl"], {"LOCAL_PYTORCH_ENABLED": "false"}, "NAME=URL"),
    ([], {"LOCAL_PYTORCH_ENABLED": "false"}, "no --upstream"),
    (["--no-local"], {}, "no --upstream"),
])
def test_serve_flag_errors(args, env, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = CliRunner().invoke(app, ["serve", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "hint:" in r.output and "Traceback" not in r.output


def test_serve_help_names_the_model_names():
    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "quantgrid:NAME" in r.output and "LOCAL_PYTORCH_ENABLED" in r.output
