"""CLI: LocoLLM's remaining contributor steps — ``propose``, ``registry``, ``data sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from quantgrid.cli._common import console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.data.settings import SampleSettings
from quantgrid.hub.contrib_settings import ProposeSettings, RegistrySettings
from quantgrid.settings import settings_of, validate


@settings_command(Flags(settings_of(ProposeSettings)))
def propose(
    queries: Annotated[Path, typer.Argument(help="3-5 queries: a text file, one per line (or JSONL with question).")],
    **given: Any,
) -> None:
    """Write an adapter proposal: the base model's answers to 3-5 queries that motivate the domain."""
    from quantgrid.proposal import propose as run
    from quantgrid.proposal import read_queries
    from quantgrid.recipe import Recipe
    from quantgrid.utils import atomic_write_text

    s = validate(ProposeSettings, given, settings_of(ProposeSettings), what="propose option",
                 hint="see `quantgrid propose --help`")
    domain, out = s.domain, s.out
    qs = read_queries(queries)
    p = run(qs, domain=domain, base_model=s.base_model or Recipe().base_model, max_new_tokens=s.max_new_tokens,
            device=s.device)
    atomic_write_text(out, p.markdown())
    console.print(f"proposal for {domain!r}: the base's answers to {len(qs)} queries written to {out}",
                  highlight=False, markup=False)


@settings_command(Flags(settings_of(RegistrySettings)))
def registry(
    adapters: Annotated[list[Path] | None, typer.Argument(
        help="Local adapter directories (or folders of them) \\[default: fetch the hub's registry]",
        show_default=False)] = None,
    **given: Any,
) -> None:
    """Write registry.yaml: every accepted adapter's name, version, author, base, scores and release."""
    from quantgrid.registry import Registry, local_registry
    from quantgrid.utils import atomic_write_text

    s = validate(RegistrySettings, given, settings_of(RegistrySettings), what="registry option",
                 hint="see `quantgrid registry --help`")
    hub, out = s.hub, s.out
    if adapters:
        reg = local_registry(list(adapters))
    else:
        from quantgrid.hub.client import HubClient

        with HubClient(hub) as client:
            reg = Registry.from_yaml(client._request("GET", "/v1/registry.yaml").text)
    atomic_write_text(out, reg.to_yaml())
    console.print(f"{len(reg.adapters)} adapter(s) ({reg.source}) written to {out}", highlight=False, markup=False)
    for e in reg.adapters:
        score = "" if e.scores.improvement is None else f", improvement {e.scores.improvement:+.4f}"
        console.print(f"  {e.name} v{e.version} by {e.author or '?'} on {e.base_model}"
                      f"{score}{f', in {e.release}' if e.release else ''}", highlight=False, markup=False)


@settings_command(Flags(settings_of(SampleSettings)))
def sample(
    source: Annotated[Path, typer.Argument(help="The dataset to review (JSON/JSONL).")],
    **given: Any,
) -> None:
    """Draw the review sample of a synthetic dataset (>= 10%), and record its provenance.

    Each sampled record goes to the review file with "review": null; set it to "accept" or
    "reject", then run again with --reviewed FILE to record the rejection rate. When the
    dataset is in an adapter's training/ folder, both steps are recorded in its TRAINING_LOG.md.
    """
    import json

    from quantgrid.data import provenance as prov
    from quantgrid.errors import DataError

    s = validate(SampleSettings, given, settings_of(SampleSettings), what="data sample option",
                 hint="see `quantgrid data sample --help`")
    fraction, seed, out, model, prompt_file, reviewed = s.fraction, s.seed, s.out, s.model, s.prompt_file, s.reviewed
    if not source.is_file():
        raise DataError(f"no such file: {source}", hint="pass the dataset you generated")
    from quantgrid.data import load_examples

    n_total = len(load_examples(source))
    log = prov.log_for(source)
    if reviewed is not None:
        counts = prov.review_counts(reviewed)
        lines = prov.review_lines(source, n_total, None, fraction, seed, model=model, prompt_file=prompt_file,
                                  counts=counts)
        key = prov.entry_key("review", source)
    else:
        if fraction < prov.MIN_REVIEW_FRACTION:
            console.print(f"note: --fraction {fraction:g} is under the {prov.MIN_REVIEW_FRACTION:.0%} a "
                          "contribution needs reviewed", highlight=False, markup=False)
        records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()] \
            if source.suffix.lower() == ".jsonl" else json.loads(source.read_text(encoding="utf-8"))
        idx = prov.draw_sample(len(records), fraction, seed)
        out = out or source.with_suffix(".review.jsonl")
        prov.write_review_file(records, idx, out)
        console.print(f"{len(idx)} of {len(records)} records to review written to {out}: set each \"review\" to "
                      f"\"accept\" or \"reject\", then run with --reviewed {out}", highlight=False, markup=False)
        lines = prov.review_lines(source, n_total, idx, fraction, seed, model=model, prompt_file=prompt_file,
                                  counts=None)
        key = prov.entry_key("sample", source)
    for line in lines:
        console.print(line, highlight=False, markup=False)
    if log is not None:
        prov.record(log, key, lines)
        console.print(f"recorded in {log}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    from quantgrid.cli.data import data_app

    app.command("propose", rich_help_panel="Contribute")(propose)
    app.command("registry", rich_help_panel="Contribute")(registry)
    data_app.command("sample")(sample)
