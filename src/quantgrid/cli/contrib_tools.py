"""CLI: LocoLLM's remaining contributor steps — ``propose``, ``registry``, ``data sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from quantgrid.cli._common import console


def propose(
    queries: Annotated[Path, typer.Argument(help="3-5 queries: a text file, one per line (or JSONL with question).")],
    domain: Annotated[str, typer.Option("--domain", help="The adapter's domain, e.g. 'SEC filings'.")],
    base_model: Annotated[str | None, typer.Option(
        "--base-model", help="Base model id or directory \\[default: the standard recipe's base]",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Proposal markdown to write.")] = Path("PROPOSAL.md"),
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=4096,
                                                help="Longest base answer, in tokens.")] = 128,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... \\[default: cuda when available]",
                                               show_default=False)] = None,
) -> None:
    """Write an adapter proposal: the base model's answers to 3-5 queries that motivate the domain."""
    from quantgrid.proposal import propose as run
    from quantgrid.proposal import read_queries
    from quantgrid.recipe import Recipe
    from quantgrid.utils import atomic_write_text

    qs = read_queries(queries)
    p = run(qs, domain=domain, base_model=base_model or Recipe().base_model, max_new_tokens=max_new_tokens,
            device=device)
    atomic_write_text(out, p.markdown())
    console.print(f"proposal for {domain!r}: the base's answers to {len(qs)} queries written to {out}",
                  highlight=False, markup=False)


def registry(
    adapters: Annotated[list[Path] | None, typer.Argument(
        help="Local adapter directories (or folders of them) \\[default: fetch the hub's registry]",
        show_default=False)] = None,
    hub: Annotated[str | None, typer.Option(
        "--hub", help="Hub URL \\[default: $QUANTGRID_HUB, else the one you logged in to]", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="registry.yaml to write.")] = Path("registry.yaml"),
) -> None:
    """Write registry.yaml: every accepted adapter's name, version, author, base, scores and release."""
    from quantgrid.registry import Registry, local_registry
    from quantgrid.utils import atomic_write_text

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


def sample(
    source: Annotated[Path, typer.Argument(help="The dataset to review (JSON/JSONL).")],
    fraction: Annotated[float, typer.Option("--fraction", help="Share of the records to review by hand.")] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="The same seed draws the same sample.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Review file \\[default: FILE.review.jsonl]",
                                             show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="The model that generated the set (recorded).")] = None,
    prompt_file: Annotated[Path | None, typer.Option(
        "--prompt-file", exists=True, dir_okay=False, help="The prompt used to generate the set (recorded by "
        "name and sha256).")] = None,
    reviewed: Annotated[Path | None, typer.Option(
        "--reviewed", exists=True, dir_okay=False, help="A filled-in review file: record how many were rejected "
        "instead of drawing a sample.")] = None,
) -> None:
    """Draw the review sample of a synthetic dataset (>= 10%), and record its provenance.

    Each sampled record goes to the review file with "review": null; set it to "accept" or
    "reject", then run again with --reviewed FILE to record the rejection rate. When the
    dataset is in an adapter's training/ folder, both steps are recorded in its TRAINING_LOG.md.
    """
    import json

    from quantgrid.data import provenance as prov
    from quantgrid.errors import DataError

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
