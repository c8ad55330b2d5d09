"""How many concurrent writers does the default sqlite MLflow store survive?

Starts N processes that each do what one training job does to the store — create a run, log its params, log
EPOCHS per-epoch metric batches, set tags, upload an artifact, end the run — all at once (a barrier releases
them together after their imports), through ``dgmbench.tracking.Tracker`` (fcntl lock + retries). Prints, per
N: failed writers, runs found in the store afterwards (must be N, each with EPOCHS steps), and write latency.

    .venv/bin/python benchmarks/tracking_writers.py            # N = 2, 4, 8, 16, 32
    .venv/bin/python benchmarks/tracking_writers.py --n 8 64 --epochs 50
    .venv/bin/python benchmarks/tracking_writers.py --uri http://127.0.0.1:5000   # a running mlflow server
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
import traceback
from pathlib import Path


def writer(uri: str, run_dir: str, epochs: int, barrier, results) -> None:
    from dgmbench.tracking import Tracker

    latencies: list[float] = []
    error = None
    try:
        barrier.wait(timeout=600)

        def timed(fn, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            latencies.append(time.perf_counter() - t0)
            return out

        tracker = timed(Tracker, uri, "bench")
        d = Path(run_dir)
        d.mkdir(parents=True)
        run_id = timed(tracker.start_run, d, d.name, {f"p{i}": i for i in range(30)}, {"seed": "0"})
        for epoch in range(1, epochs + 1):
            timed(tracker.log_metrics, run_id, {"train_loss": 1.0 / epoch, "val_nats": 2.0 / epoch,
                                                "seconds": float(epoch)}, step=epoch)
        timed(tracker.set_tags, run_id, {"status": "ok"})
        (d / "curve.csv").write_text("epoch\n" + "\n".join(map(str, range(1, epochs + 1))) + "\n")
        timed(tracker.log_artifact, run_id, d / "curve.csv")
        timed(tracker.end_run, run_id)
    except Exception as err:  # report, do not hide: the count of these is the result
        error = f"{type(err).__name__}: {err}"[:300] or traceback.format_exc()[-300:]
    results.put((latencies, error))


def check_store(uri: str, n: int, epochs: int) -> tuple[int, int]:
    """(runs recorded, runs with a complete, duplicate-free history and their artifact)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bench")
    runs = client.search_runs([exp.experiment_id], max_results=10 * n + 100) if exp else []
    complete = 0
    for r in runs:
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "train_loss"))
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        complete += steps == list(range(1, epochs + 1)) and "curve.csv" in arts and r.info.status == "FINISHED"
    return len(runs), complete


def bench(n: int, epochs: int, uri: str | None) -> dict:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix=f"writers{n}-") as tmp:
        store = uri or f"sqlite:///{Path(tmp) / 'mlflow' / 'mlflow.db'}"
        barrier, results = ctx.Barrier(n + 1), ctx.Queue()
        procs = [ctx.Process(target=writer, args=(store, f"{tmp}/runs/r{i}-{time.time_ns()}", epochs, barrier, results))
                 for i in range(n)]
        for p in procs:
            p.start()
        barrier.wait(timeout=600)  # every writer has imported everything: start the clock
        t0 = time.perf_counter()
        outs = [results.get(timeout=1800) for _ in procs]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join()
        lat = sorted(x for lats, _ in outs for x in lats)
        errors = [e for _, e in outs if e]
        recorded, complete = check_store(store, n, epochs) if uri is None else (None, None)
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    return {"n": n, "failed": len(errors), "recorded": recorded, "complete": complete, "writes": len(lat),
            "p50_ms": q(0.5), "p95_ms": q(0.95), "max_ms": q(1.0), "wall_s": wall,
            "writes_per_s": len(lat) / wall if wall else float("nan"), "first_error": errors[0] if errors else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[2, 4, 8, 16, 32], help="concurrent writers")
    ap.add_argument("--epochs", type=int, default=20, help="metric batches per run")
    ap.add_argument("--uri", help="tracking URI (default: a fresh sqlite store per N)")
    args = ap.parse_args()
    print(f"{'N':>4} {'failed':>6} {'recorded':>8} {'complete':>8} {'writes':>6} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'max ms':>7} {'wall s':>7} {'writes/s':>8}")
    for n in args.n:
        r = bench(n, args.epochs, args.uri)
        print(f"{r['n']:>4} {r['failed']:>6} {str(r['recorded']):>8} {str(r['complete']):>8} {r['writes']:>6} "
              f"{r['p50_ms']:>7.1f} {r['p95_ms']:>7.1f} {r['max_ms']:>7.1f} {r['wall_s']:>7.1f} "
              f"{r['writes_per_s']:>8.1f}  {r['first_error']}", flush=True)


if __name__ == "__main__":
    main()
