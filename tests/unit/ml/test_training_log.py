"""The progress display (bar on a terminal, plain lines without one) and the training records."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from quantgrid.ml.checkpoint import TrainState
from quantgrid.ml.training_log import Progress, loss_table, plot_losses


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=120), buf


def test_without_a_tty_progress_is_plain_log_lines():
    console, buf = _console(terminal=False)
    p = Progress(20, mode="auto", log_every=10, console=console)
    assert p.mode == "plain"
    for step in range(1, 21):
        p.update(step, 2.0 - step / 20, 1234.0, 1e-4)
    p.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2  # steps 10 and 20 only: no redraw noise in notebooks or CI logs
    assert lines[0].startswith("step 10/20  loss 1.5000") and "1,234 tok/s" in lines[0] and "eta" in lines[0]
    assert "\x1b[" not in buf.getvalue()


def test_on_a_terminal_progress_is_a_rich_bar():
    console, buf = _console(terminal=True)
    p = Progress(5, mode="auto", console=console)
    assert p.mode == "rich"
    for step in range(1, 6):
        p.update(step, 1.25, 999.0, 1e-4)
    p.close()
    out = buf.getvalue()
    assert "loss 1.2500" in out and "999 tok/s" in out and "5/5" in out


def test_mode_none_is_silent_except_warnings():
    console, buf = _console(terminal=False)
    p = Progress(5, mode="none", console=console)
    p.update(5, 1.0, 1.0, 1.0)
    p.note("hidden")
    p.note("shown", always=True)
    assert buf.getvalue() == "shown\n"


def test_loss_table_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    state = TrainState(step=40, history=[{"step": s, "loss": 3 - s / 20, "lr": 1e-4, "tokens": s * 10}
                                         for s in range(1, 41)],
                       evals=[{"step": 0, "epoch": 0, "eval_loss": 3.1}, {"step": 40, "epoch": 1, "eval_loss": 1.2}])
    table = loss_table(state, max_rows=10)
    rows = table.splitlines()[2:]
    assert rows[0] == "| 0 |  | 3.1000 |  |"  # the base model's eval loss, before training
    assert rows[-1] == "| 40 | 1.0000 | 1.2000 | 1.00e-04 |"
    assert len(rows) <= 11
    plot_losses(state, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
