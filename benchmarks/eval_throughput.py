"""Proof-of-loss throughput: ``quantgrid.eval.loss`` vs lm-evaluation-harness vs plain loops.

Every method scores the same completion tokens of the same items with the same model
(a Llama-shaped model built from a config, float32, on CUDA when there is one), and the
per-item NLL of each is checked against quantgrid's (max abs difference in nats per
token, must be < 1e-4).

The default model is ~20M parameters: 4 layers x 256 wide with Llama-2's 32,000-token
vocabulary. At that size the vocabulary projection is a larger share of the compute
than in a 7B model (where it is ~2%), which favours quantgrid's completion-only
projection; ``--hidden 512 --layers 5 --vocab 8192`` is a body-heavy shape where the
advantage is smaller. Report both.

Methods:

- ``quantgrid``: ``completion_losses`` -- length-sorted batches with <= 10% padding, no
  attention mask (right padding under a causal mask), the vocabulary projection only on
  the hidden states that predict completion tokens.
- ``lm-eval``: lm-evaluation-harness's ``HFLM`` wrapping the same model object, its
  loglikelihood path (``_loglikelihood_tokens``, which every loglikelihood request goes
  through) fed the same (context, continuation) token ids, at each batch size in
  ``--lm-eval-batch-sizes``; the best is reported. (The string API re-tokenizes the
  context and continuation jointly and without BOS, so its tokens -- and NLL -- would not
  be the ones training scores.)
- ``hf-padded``: fixed-size batches in input order, padded, with an attention mask and
  full logits: the obvious batched Hugging Face loop.
- ``naive``: one ``model(ids, labels=labels)`` call per item.

Scored tokens/s = completion tokens / wall seconds; each method runs ``--repeats`` times
after a warm-up and the fastest run counts. Writes benchmarks/results/eval_throughput.json.

    python benchmarks/eval_throughput.py                  # 80 finance-dev items, a few minutes
    python benchmarks/eval_throughput.py --n 500 --hidden 512 --layers 5 --vocab 8192  # body-heavy
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "eval_throughput.json"


def build_model(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    from quantgrid.data.finance import tokenizer_corpus
    from quantgrid.ml.models import train_tokenizer

    tok = train_tokenizer(tokenizer_corpus(seed=0), args.tokenizer_vocab)
    # The model's vocabulary can be larger than the tokenizer's (Qwen2.5 pads 151,646 to
    # 151,936): the default 32,000 is Llama-2's and Mistral-7B's.
    cfg = LlamaConfig(vocab_size=max(args.vocab, len(tok)), hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.6875),
                      num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                      num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=2048,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(args.device).eval()
    model.config.use_cache = False
    return model, tok


def timed(fn, repeats: int):
    """(result, best wall seconds, CPU seconds of that run) after a warm-up."""
    fn()  # warm-up: allocator, kernels, lazy imports
    best, cpu, out = math.inf, math.inf, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if time.perf_counter() - t0 < best:
            best, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, best, cpu


def run_quantgrid(model, enc, pad_id, batch_tokens):
    from quantgrid.eval.loss import encoded_losses

    return encoded_losses(model, enc, pad_token_id=pad_id, batch_tokens=batch_tokens)[None].nll


def run_naive(model, enc):
    from quantgrid.eval.loss import reference_losses

    return [x * e.n_completion_tokens for x, e in zip(reference_losses(model, enc), enc, strict=True)]


def run_hf_padded(model, enc, pad_id, batch_size):
    import torch.nn.functional as F

    from quantgrid.ml.tokenize import IGNORE_INDEX

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for s in range(0, len(enc), batch_size):
            chunk = enc[s: s + batch_size]
            width = max(len(e) for e in chunk)
            ids = torch.tensor([e.input_ids + [pad_id] * (width - len(e)) for e in chunk], device=device)
            mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in chunk], device=device)
            labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e)) for e in chunk], device=device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")  # (B, T-1)
            out += nll.sum(dim=1).double().tolist()
    return out


def lm_eval_runner(model, tok, enc, batch_size):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=2048,
              device=str(next(model.parameters()).device), dtype=next(model.parameters()).dtype)
    requests = []
    for i, e in enumerate(enc):
        n_prompt = e.input_ids.__len__() - e.n_completion_tokens
        requests.append(((f"ctx{i}", f"cont{i}"), e.input_ids[:n_prompt], e.input_ids[n_prompt:]))

    def run():
        res = lm._loglikelihood_tokens(requests, disable_tqdm=True)
        return [-logprob for logprob, _ in res]
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=80, help="benchmark items (from builtin:finance-dev)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000, help="model vocabulary (Llama-2 / Mistral: 32000)")
    p.add_argument("--tokenizer-vocab", type=int, default=8192, help="BPE vocabulary to train (the corpus may give fewer)")
    p.add_argument("--template", default="context_qa", help="prompt template (context_qa: prompts with context)")
    p.add_argument("--batch-tokens", default="2048,8192", help="quantgrid's padded tokens per batch (best counts)")
    p.add_argument("--hf-batch-size", type=int, default=16)
    p.add_argument("--lm-eval-batch-sizes", default="8,32")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from quantgrid.data import load_examples
    from quantgrid.ml.tokenize import encode

    model, tok = build_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    examples = load_examples("builtin:finance-dev")[: args.n]
    enc = [encode(tok, ex, args.template, 2048) for ex in examples]
    tokens = sum(e.n_completion_tokens for e in enc)
    all_tokens = sum(len(e) for e in enc)
    pad = tok.pad_token_id
    print(f"model: {n_params / 1e6:.1f}M params, vocab {model.config.vocab_size}, {args.layers} layers x {args.hidden}; "
          f"{len(enc)} items, {all_tokens:,} tokens of which {tokens:,} scored; device {args.device}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)

    rows: list[dict] = []
    ref = None
    for bt in [int(b) for b in args.batch_tokens.split(",") if b]:
        nll, t, c = timed(lambda bt=bt: run_quantgrid(model, enc, pad, bt), args.repeats)
        ref = ref or nll
        rows.append({"method": "quantgrid", "batch": f"{bt} tokens", "seconds": t, "cpu_seconds": c, "nll": nll})

    lm_eval_error = None
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:
        lm_eval_error = f"lm-eval is not installed ({e}); pip install 'quantgrid[bench]'"
    if lm_eval_error is None:
        for bs in [int(b) for b in args.lm_eval_batch_sizes.split(",") if b]:
            try:
                nll, t, c = timed(lm_eval_runner(model, tok, enc, bs), args.repeats)
            except Exception as e:  # report, don't hide: the table says why the row is missing
                lm_eval_error = f"{type(e).__name__}: {e}"
                break
            rows.append({"method": "lm-eval", "batch": str(bs), "seconds": t, "cpu_seconds": c, "nll": nll})
    nll, t, c = timed(lambda: run_hf_padded(model, enc, pad, args.hf_batch_size), args.repeats)
    rows.append({"method": "hf-padded", "batch": str(args.hf_batch_size), "seconds": t, "cpu_seconds": c, "nll": nll})
    if not args.skip_naive:
        nll, t, c = timed(lambda: run_naive(model, enc), 1)
        rows.append({"method": "naive", "batch": "1", "seconds": t, "cpu_seconds": c, "nll": nll})

    from machine_peak import forward_flops_per_token, fraction, matmul_peak_gflops

    peak = matmul_peak_gflops(torch.get_num_threads()) if args.device == "cpu" else None
    # every token of an item goes through the layers; the vocabulary projection is left out
    # (quantgrid computes it only where a completion token is predicted, the others everywhere)
    flops_per_scored = forward_flops_per_token(model.config, with_logits=False) * all_tokens / tokens
    counts = [e.n_completion_tokens for e in enc]
    for r in rows:
        r["tokens_per_s"] = tokens / r["seconds"]
        r["tokens_per_cpu_s"] = tokens / r["cpu_seconds"]
        if peak:
            r.update(fraction(r["tokens_per_cpu_s"], flops_per_scored, peak))
        r["max_abs_diff_nats_per_token"] = max(abs(a - b) / n for a, b, n in zip(r.pop("nll"), ref, counts, strict=True))
        r["nll_match"] = r["max_abs_diff_nats_per_token"] < 1e-4
    qg = max(r["tokens_per_s"] for r in rows if r["method"] == "quantgrid")
    best = {}
    for r in rows:
        r["quantgrid_speedup"] = qg / r["tokens_per_s"]  # quantgrid at its best batch over this row
        if r["method"] not in best or r["tokens_per_s"] > best[r["method"]]["tokens_per_s"]:
            best[r["method"]] = r
    summary = {m: {"tokens_per_s": r["tokens_per_s"], "batch": r["batch"], "quantgrid_speedup": r["quantgrid_speedup"]}
               for m, r in best.items()}
    result = {
        "benchmark": "eval_throughput", "goal": "quantgrid >= 1.5x lm-eval's scored tokens/s",
        "goal_met": (best["lm-eval"]["quantgrid_speedup"] >= 1.5) if "lm-eval" in best else None,
        "lm_eval_error": lm_eval_error,
        "model": {"params": n_params, "vocab": model.config.vocab_size, "tokenizer_vocab": len(tok),
                  "hidden": args.hidden, "layers": args.layers,
                  "dtype": str(next(model.parameters()).dtype)},
        "items": len(enc), "tokens": all_tokens, "scored_tokens": tokens, "template": args.template,
        "device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "repeats": args.repeats, "rows": rows, "best": summary,
        "matmul_peak_gflops": peak, "flops_per_scored_token": flops_per_scored,
        "command": "python " + " ".join(sys.argv),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    print(f"fp32 matmul peak: {peak:.0f} GFLOP per CPU-second\n" if peak else "")
    print("| method | batch | scored tokens/s | scored tokens/CPU-s | quantgrid speedup | quantgrid speedup per CPU-s "
          "| max NLL diff (nats/token) | fraction of matmul peak |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    qg_cpu = max(r["tokens_per_cpu_s"] for r in rows if r["method"] == "quantgrid")
    for r in rows:
        frac = f"{r['fraction_of_peak']:.1%}" if "fraction_of_peak" in r else "-"
        print(f"| {r['method']} | {r['batch']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_cpu_s']:,.0f} | "
              f"{r['quantgrid_speedup']:.2f}x | {qg_cpu / r['tokens_per_cpu_s']:.2f}x | "
              f"{r['max_abs_diff_nats_per_token']:.1e} | {frac} |")
    if lm_eval_error:
        print(f"\nlm-eval: {lm_eval_error}")
    ok = all(r["nll_match"] for r in rows)
    print(f"\nNLL parity (< 1e-4 nats/token on every item): {'yes' if ok else 'NO'}; "
          f"goal >= 1.5x lm-eval: {result['goal_met']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
