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
ACTIONS = {"help", "list_metrics", "list_topics"}


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
    assert {"package", "data check", "data normalize", "data split", "data leakage", "data finance",
            "data from-feedback", "data sample", "base tiny", "recipe show", "propose", "registry", "login", "whoami",
            "push", "status", "leaderboard", "upvote", "releases", "demo", "alpha synth", "hub human-eval generate",
            "hub human-eval results"} <= set(GENERATED)


# Commands whose every option is generated: no hand-written typer.Option is left in them.
def test_no_hand_written_options_in_the_converted_commands():
    for name in ("package", "data check", "data normalize", "data split", "data leakage", "data from-feedback",
                 "data sample", "base tiny", "recipe show", "propose", "registry", "login", "push", "status",
                 "leaderboard", "releases", "demo", "alpha synth", "hub human-eval generate", "hub human-eval results"):
        cmd = GENERATED[name]
        generated = {k for g in cmd.callback.settings_groups for k in g.settings}
        assert {p.name for p in _options(cmd)} - ACTIONS <= generated, name


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
    "alpha synth": ["panel.csv"],
    "base tiny": ["out"],
    "data check": ["x.jsonl"],
    "data normalize": ["x.jsonl"],
    "data split": ["x.jsonl"],
    "data leakage": ["a.jsonl", "b.jsonl"],
    "data from-feedback": ["store.jsonl", "--out", "o.jsonl"],
    "data sample": ["x.jsonl"],
    "package": ["adapter", "--author", "a", "--dataset-desc", "d"],
    "propose": ["queries.txt", "--domain", "d"],
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


@pytest.mark.parametrize("args,flag", [
    (["package", "adapter", "--dataset-desc", "d"], "--author"),
    (["package", "adapter", "--author", "a"], "--dataset-desc"),
    (["propose", "queries.txt"], "--domain"),
    (["data", "from-feedback", "store.jsonl"], "--out"),
])
def test_a_missing_required_setting_names_its_flag(args, flag, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "hint:" in r.output, r.output
    assert f"{flag}: required, and not given" in r.output.split("hint:")[0], r.output


def _help(*words):
    r = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())


def test_export_outtype_help_lists_every_supported_type():
    from quantgrid.export.gguf import OUTTYPES

    for command in ("gguf", "ollama"):
        text = _help("export", command)
        assert all(t in text for t in OUTTYPES), (command, text)


def test_base_tiny_family_lists_every_family_and_reaches_the_builder(tmp_path, monkeypatch):
    import json

    from quantgrid.ml import models
    from quantgrid.ml.tiny import TINY_FAMILIES

    text = _help("base", "tiny")
    assert "--family" in text and all(f in text for f in TINY_FAMILIES), text
    real = models.build_tiny_base
    monkeypatch.setattr(models, "build_tiny_base", lambda out, **kw: real(out, pretrain_steps=0, **kw))
    r = CliRunner().invoke(app, ["base", "tiny", str(tmp_path / "q"), "--family", "qwen2", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "q" / "config.json").read_text())["model_type"] == "qwen2"
    assert "quantgrid-tiny-qwen2-test" in r.output
    r = CliRunner().invoke(app, ["base", "tiny", str(tmp_path / "p"), "--family", "phi"])
    assert r.exit_code == 2 and "--family" in r.output and "qwen2" in r.output, r.output
    assert not (tmp_path / "p").exists()
