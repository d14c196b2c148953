"""Hub validation throughput: submissions validated per minute with 1 and 2 worker processes,
on PostgreSQL, through the real processes (`quantgrid hub serve --no-worker` for the API and
`quantgrid hub worker --kind validate` per worker).

For each worker count the same N well-formed submissions (LoRA weights of the recipe's shapes,
seeded: identical bytes in every run) are pushed over HTTP into a fresh database and storage
while no worker runs; then the workers start and the clock runs from the first job a worker
takes (so process start-up and model loading before it are not counted) to the last verdict
recorded. Every submission goes through the whole pipeline (static checks, near-duplicate
search, hidden-benchmark and out-of-domain scoring); small random weights are rejected at the
proof-of-loss stage, after all the scoring work, which is the common case a hub sees.

    eval "$(bash scripts/postgres.sh start)"     # sets QUANTGRID_TEST_POSTGRES_URL
    python benchmarks/hub_throughput.py --n 16 --workers 1,2
    bash scripts/postgres.sh stop "$QG_PG_DATA"

Writes benchmarks/results/hub_throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANTGRID = str(Path(sys.executable).with_name("quantgrid"))
RESULTS = Path(__file__).parent / "results" / "hub_throughput.json"
# The test suite's helpers: the seeded submission generator and the throwaway-database helper.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTGRID_")}
    env.update({"QUANTGRID_CONFIG_DIR": str(root / "cfg"), "QUANTGRID_HUB_WORKER_POLL_SECONDS": "0.1",
                "QUANTGRID_HUB_MAX_CONCURRENT_UPLOADS_PER_USER": "8"})
    return env


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def submissions(base: str, n: int) -> list[bytes]:
    """N distinct, well-formed submission zips (seeded)."""
    import numpy as np
    from malicious import generator as g

    from quantgrid.adapter import BaseShape, expected_lora_shapes
    from quantgrid.recipe import Recipe

    recipe = Recipe.from_dict({"base_model": base}, source="benchmark")
    shape = BaseShape.from_dir(base)
    out = []
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        tensors = {k: (rng.standard_normal(s) * 0.01).astype(np.float32)
                   for k, s in expected_lora_shapes(recipe, shape).items()}
        out.append(g.submission_for(tensors, recipe, shape))
    return out


def run(admin_url: str, base: str, zips: list[bytes], workers: int, root: Path) -> dict:
    import httpx
    from _postgres import fresh_database
    from sqlalchemy import func, select

    from quantgrid.hub.server.auth import add_user
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.models import Job, Submission

    storage = root / f"storage-{workers}"
    env = env_for(root)
    with fresh_database(admin_url) as url:
        db = Database(url)  # migrates once, before the processes start
        # The default daily limit is per user: spread the pushes over enough users.
        tokens = [add_user(db, f"bench{i}") for i in range(len(zips) // 10 + 1)]
        port = free_port()
        log = open(root / f"api-{workers}.log", "ab")
        api = subprocess.Popen([QUANTGRID, "hub", "serve", "--port", str(port), "--storage", str(storage), "--db",
                                url, "--no-worker", "--base-model", base, "--log-level", "warning"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
        procs = [api]
        try:
            api_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{api_url}/v1/health", timeout=1).status_code == 200:
                        break
                assert api.poll() is None and time.monotonic() < deadline, "the hub API did not come up"
                time.sleep(0.2)
            for i, data in enumerate(zips):
                r = httpx.post(f"{api_url}/v1/submissions", content=data, timeout=60, headers={
                    "Authorization": f"Bearer {tokens[i // 10]}", "X-Content-SHA256": hashlib.sha256(data).hexdigest()})
                assert r.status_code == 201, r.text
            # One share of the cores per worker, as an operator sets it: torch's default of a
            # thread per core in every worker oversubscribes the machine (2 workers x 2 threads
            # on 2 cores ran slower than 1 worker).
            wenv = {**env, "OMP_NUM_THREADS": str(threads_per_worker(workers))}
            for w in range(workers):
                wlog = open(root / f"worker-{workers}-{w}.log", "ab")
                procs.append(subprocess.Popen(
                    [QUANTGRID, "hub", "worker", "--storage", str(storage), "--db", url, "--kind", "validate",
                     "--base-model", base, "--log-level", "warning"], env=wenv, stdout=wlog, stderr=subprocess.STDOUT))
            launched = time.monotonic()
            first_taken = None
            while True:
                with db.read() as s:
                    queued = s.scalar(select(func.count()).select_from(Job).where(Job.kind == "validate",
                                                                                  Job.status == "queued"))
                    decided = s.scalar(select(func.count()).select_from(Submission)
                                       .where(Submission.status.in_(("accepted", "rejected"))))
                now = time.monotonic()
                if first_taken is None and queued < len(zips):
                    first_taken = now
                if decided >= len(zips):
                    break
                assert all(p.poll() is None for p in procs), "a hub process died; see the logs in " + str(root)
                assert now - launched < 3600, "validation did not finish in an hour"
                time.sleep(0.1)
            elapsed = now - first_taken
            with db.read() as s:
                stages = [(x.status, (x.report or {}).get("stage")) for x in s.scalars(select(Submission))]
        finally:
            for p in procs:
                stop(p)
            db.dispose()
    return {"workers": workers, "threads_per_worker": threads_per_worker(workers), "n": len(zips), "seconds": round(elapsed, 2),
            "start_up_seconds": round(first_taken - launched, 2),
            "subs_per_minute": round(len(zips) * 60.0 / elapsed, 2),
            "verdicts": {f"{st}:{stage}": sum(1 for v in stages if v == (st, stage)) for st, stage in set(stages)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="submissions per run (the same ones in every run)")
    ap.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    ap.add_argument("--size", default="test", help="tiny base size (quantgrid.ml.tiny.TINY_SIZES)")
    ap.add_argument("--db", default=os.environ.get("QUANTGRID_TEST_POSTGRES_URL"),
                    help="PostgreSQL admin URL (default: $QUANTGRID_TEST_POSTGRES_URL)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if not args.db or not args.db.startswith("postgresql"):
        ap.error('needs PostgreSQL: eval "$(bash scripts/postgres.sh start)" or --db postgresql+psycopg://...')
    from quantgrid.ml.models import build_tiny_base

    with tempfile.TemporaryDirectory(prefix="qg-bench-hub-") as tmp:
        root = Path(tmp)
        base = str(build_tiny_base(root / "base", size=args.size, seed=0))
        zips = submissions(base, args.n)
        runs = []
        for w in [int(x) for x in args.workers.split(",")]:
            r = run(args.db, base, zips, w, root)
            print(f"{w} worker(s): {r['n']} submissions in {r['seconds']:.1f} s = {r['subs_per_minute']:.1f}/min "
                  f"(start-up before the first job {r['start_up_seconds']:.1f} s) {r['verdicts']}", flush=True)
            runs.append(r)
    result = {"benchmark": "hub_throughput", "database": "postgresql", "base_size": args.size,
              "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
              "runs": runs}
    if len(runs) >= 2:
        result["speedup"] = round(runs[-1]["subs_per_minute"] / runs[0]["subs_per_minute"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
