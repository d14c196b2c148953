"""Builders the serving tests share: our engine and PEFT over the same saved adapters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path


def engine_with(base: str, adapters: Mapping[str, Path], **kwargs):
    """An Engine on ``base`` with every adapter registered under its name (not started)."""
    from quantgrid.serve.engine import Engine

    eng = Engine.from_base(base, **kwargs)
    for name, path in adapters.items():
        eng.register_adapter(name, path)
    return eng


@contextlib.contextmanager
def running_engine(base: str, adapters: Mapping[str, Path], **kwargs) -> Iterator:
    """:func:`engine_with`, started for the block and stopped after it."""
    eng = engine_with(base, adapters, **kwargs)
    eng.start()
    try:
        yield eng
    finally:
        eng.stop()


def peft_with(base: str, adapters: Mapping[str, Path]):
    """(PeftModel holding every adapter under its name, tokenizer): the reference to compare with."""
    from peft import PeftModel

    from quantgrid.ml.models import load_base

    model, tok = load_base(base)
    names = list(adapters)
    pm = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        pm.load_adapter(str(adapters[n]), adapter_name=n)
    return pm, tok
