"""Generated flags: every setting of a command's models is exactly one flag, every flag is one
setting, and every validation error names a flag that the command's ``--help`` lists."""

from __future__ import annotations

import re
import typing
from collections import Counter

import annotated_types
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from quantgrid.cli import app

# Options a command has that are actions, not settings.
ACTIONS = {"help", "list_metrics"}


def _commands(cmd=None, path=()):
    cmd = cmd or get_command(app)
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))
    if not hasattr(cmd, "commands"):
        yield path, cmd


GENERATED = {" ".join(p): c for p, c in _commands() if hasattr(c.callback, "settings_groups")}


def _options(cmd):
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option"]


def test_the_redesigned_commands_use_generated_flags():
    assert {"train", "serve", "hub serve", "hub worker", "hub rotate-benchmark", "hub user add", "eval", "export merged",
            "export gguf", "export ollama"} <= set(GENERATED)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_every_setting_is_one_flag_and_every_flag_one_setting(name):
    cmd = GENERATED[name]
    settings = {k: s for g in cmd.callback.settings_groups for k, s in g.settings.items() if s.cli}
    options = {p.name: p for p in _options(cmd)}
    assert set(settings) == set(options) - ACTIONS
    for key, s in settings.items():
        assert options[key].opts[0] == s.flag, key
        assert set(s.flags) <= set(options[key].opts)
    spellings = Counter(o for p in options.values() for o in (*p.opts, *p.secondary_opts))
    assert [o for o, n in spellings.items() if n > 1] == []


def _bad_values(s):
    """Values the field's own constraints reject (the model, not click, refuses them)."""
    ann = s.annotation
    if typing.get_origin(ann) is typing.Literal:
        return
    for m in s.field.metadata:
        if isinstance(m, annotated_types.Ge):
            yield m.ge - 1
        elif isinstance(m, annotated_types.Gt):
            yield m.gt
        elif isinstance(m, annotated_types.Le):
            yield m.le + 1
        elif isinstance(m, annotated_types.Lt):
            yield m.lt


# Arguments that satisfy the command's required settings, so the one bad value is the error.
BASE_ARGS = {
    "train": ["-d", "data.jsonl", "-o", "out"],
    "serve": ["--base", "b"],
    "eval": ["-b", "builtin:finance-dev"],
    "hub rollback": ["2026.01"],
    "hub user add": ["alice"],
    "hub user token": ["alice"],
    "hub user revoke": ["alice"],
    "alpha backtest": ["rank(close)"],
    "alpha score": ["answers.txt"],
}


def _cases():
    for name, cmd in sorted(GENERATED.items()):
        for g in cmd.callback.settings_groups:
            for s in g.settings.values():
                if s.cli and s.annotation in (int, float):
                    for bad in _bad_values(s):
                        yield pytest.param(name, s.flag, bad, id=f"{name} {s.flag} {bad}")


@pytest.mark.parametrize("name,flag,bad", list(_cases()))
def test_every_validation_error_names_a_listed_flag(name, flag, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    words = name.split()
    r = CliRunner().invoke(app, [*words, *BASE_ARGS.get(name, []), flag, str(bad)])
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and "hint:" in r.output and "Traceback" not in r.output
    named = set(re.findall(r"(?<![\w-])(--[a-z0-9][\w-]*)", r.output.split("hint:")[0]))
    assert flag in named, r.output
    listed = {o for p in GENERATED[name].params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
    assert named <= listed, r.output


@pytest.mark.parametrize("args,flag", [
    (["train", "-d", "x", "-o", "o", "--early-stopping", "0"], "--early-stopping"),
    (["train", "-d", "x", "-o", "o", "--learning-rate", "2"], "--lr"),  # a TrainingArguments spelling
    (["train", "-d", "x", "-o", "o", "--num-train-epochs", "0"], "--epochs"),
    (["train", "-d", "x", "-o", "o", "--per-device-train-batch-size", "0"], "--batch-size"),
    (["train", "-d", "x", "-o", "o", "--gradient-accumulation-steps", "0"], "--grad-accum"),
    (["train", "-d", "x", "-o", "o", "--logging-steps", "0"], "--log-every"),
    (["serve", "--base", "b", "--router", "magic"], "'--router'"),
    (["serve", "--base", "b", "--local-timeout", "0"], "--local-timeout"),
])
def test_reported_flag_bugs(args, flag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and flag in r.output and "hint:" in r.output, r.output
    assert "router_method" not in r.output and "local_timeout_s" not in r.output
