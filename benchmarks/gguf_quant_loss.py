"""Loss of the deployed (GGUF, quantized) model vs the PyTorch f32 model it came from.

For each tiny base family: build the base, train a short adapter, export base and adapter
to GGUF, then score the same benchmark (proof of loss, nats per completion token) with
PyTorch f32 + PEFT and with llama.cpp on the f32, q8_0 and q4_k_m base files (the adapter
GGUF stays f32). The gap is what quantization costs; the f32 GGUF row checks that the
llama.cpp path itself costs nothing.

    python benchmarks/gguf_quant_loss.py                         # demo size, 4 families, 60 items
    python benchmarks/gguf_quant_loss.py --size test --families llama gemma --limit 20
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "gguf_quant_loss.json"
OUTTYPES = ("f32", "q8_0", "q4_k_m")


def run(family: str, size: str, limit: int, steps: int, work: Path) -> dict:
    import torch

    from quantgrid.eval.harness import EvalConfig, run_eval
    from quantgrid.export.gguf import export_adapter, export_base, gguf_tensor_types
    from quantgrid.ml.tiny import build_tiny_base
    from quantgrid.ml.trainer import QuantGridTrainer

    torch.set_num_threads(2)
    base = str(build_tiny_base(work / f"base-{family}", size=size, family=family))
    adapter = QuantGridTrainer(base_model=base).train(
        dataset_path="builtin:finance-train", output_dir=work / f"adapter-{family}", max_steps=steps,
        batch_size=8, progress="none", learning_rate=2e-3 if size == "test" else 5e-4)
    lora = export_adapter(adapter, base, work / f"lora-{family}.gguf", "f32")
    common = dict(benchmark="builtin:finance-dev", limit=limit, adapter=adapter, base_model=base, metrics=["loss"],
                  ood="none", output=None)
    ref = run_eval(EvalConfig(**common))
    rows = {"pytorch f32": {"base": ref.losses[None].mean, "adapter": ref.losses[ref.adapter_key].mean}}
    for outtype in OUTTYPES:
        f = export_base(base, work / f"base-{family}-{outtype}.gguf", outtype)
        ev = run_eval(EvalConfig(**common, gguf=f, gguf_adapter=lora))
        types = sorted(set(gguf_tensor_types(f).values()))
        rows[f"gguf {outtype}"] = {"base": ev.losses[None].mean, "adapter": ev.losses[ev.adapter_key].mean,
                                   "quantization": ev.results.quantization, "tensor_types": types,
                                   "bytes": f.stat().st_size}
    for r in rows.values():
        r["adapter_gap"] = r["adapter"] - rows["pytorch f32"]["adapter"]
        r["adapter_gap_rel"] = r["adapter_gap"] / rows["pytorch f32"]["adapter"]
    return rows


def table(results: dict) -> str:
    lines = ["| family | model | base loss | adapter loss | adapter gap vs PyTorch f32 | tensor types |",
             "|---|---|---:|---:|---:|---|"]
    for family, rows in results["families"].items():
        for name, r in rows.items():
            lines.append(f"| {family} | {name} | {r['base']:.4f} | {r['adapter']:.4f} | "
                         f"{r['adapter_gap']:+.4f} ({r['adapter_gap_rel']:+.2%}) | "
                         f"{', '.join(r.get('tensor_types', ['f32']))} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="demo")
    ap.add_argument("--families", nargs="+", default=["llama", "llama-spm", "qwen2", "gemma"])
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    t0 = time.time()
    out = {"machine": platform.processor() or platform.machine(), "size": args.size, "limit": args.limit,
           "steps": args.steps, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for fam in args.families:
            out["families"][fam] = run(fam, args.size, args.limit, args.steps, Path(tmp))
    out["seconds"] = round(time.time() - t0, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(table(out))


if __name__ == "__main__":
    main()
