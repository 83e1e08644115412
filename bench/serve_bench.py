"""What serving costs: a /metrics scrape, and HTTP ingest throughput, each against its baseline.

    python bench/serve_bench.py --events 1000000          # SQLite in a temporary directory
    python bench/serve_bench.py --db postgresql://... --events 1000000

1. /metrics: a scrape reads the rollups of yesterday and today; the days before are summed once
   and kept (RollupTotals). Baseline: summing every day of the rollups at every scrape.
2. HTTP ingest: POST /api/v1/events to a real ``voxtrail serve`` in batches of 1,000 events.
   Baseline: one event per request, as a naive client would send them.
Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from voxtrail.demo.synthetic import generate
from voxtrail.query.prometheus import RollupTotals, rollup_totals
from voxtrail.store import Store, accounts


def fill(store: Store, events: int) -> None:
    start = time.perf_counter()
    for batch in generate(events=events, texts=False):
        store.write(batch)
    print(f"filled {events:,} events in {time.perf_counter() - start:.1f} s")


def bench_metrics(store: Store, rounds: int) -> None:
    every_day, recent = [], []
    totals = RollupTotals()
    with store.engine.connect() as conn:
        totals.refresh(conn)  # the first scrape after a start sums every day once
    for i in range(rounds):
        new = next(generate(events=1000, seed=1000 + i, chunk_size=1000, texts=False))
        new.frame = new.frame.with_columns(new.frame["request_id"] + f"-bench{i}-{time.time_ns()}")
        store.write(new)
        with store.engine.connect() as conn:
            start = time.perf_counter()
            totals.refresh(conn)
            recent.append(time.perf_counter() - start)
            start = time.perf_counter()
            rollup_totals(conn)
            every_day.append(time.perf_counter() - start)
    f, i = statistics.median(every_day), statistics.median(recent)
    print(f"/metrics scrape after 1,000 new events: every rollup day median {f * 1000:.1f} ms, "
          f"yesterday and today median {i * 1000:.1f} ms, ratio {f / i:.0f}x ({rounds} rounds)")


def event(i: int, run: str) -> dict:
    return {"request_id": f"{run}-{i}", "ts": "2025-03-01T10:00:00.250+08:00", "status": "success",
            "latency_ms": 900.0 + i % 500, "text_length": 40 + i % 100, "node": "gpu-1", "model": "IndexTTS2",
            "emotion": "happy"}


def bench_ingest(url: str, events: int, single: int) -> None:
    with Store.open(url) as store:
        _, token = accounts.create_token(store.engine, f"bench-{time.time_ns()}")
    server = subprocess.Popen([sys.executable, "-m", "voxtrail", "serve", "--db", url, "--port", "0",
                               "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        base = re.search(r"(https?://\S+/)", server.stdout.readline()).group(1)
        headers = {"Authorization": f"Bearer {token}"}
        run = f"b{time.time_ns()}"
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            http.get("/healthz")
            start = time.perf_counter()
            for first in range(0, events, 1000):
                body = orjson.dumps([event(i, run) for i in range(first, min(events, first + 1000))])
                response = http.post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
                response.raise_for_status()
            batched = events / (time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(single):
                response = http.post("/api/v1/events", content=orjson.dumps(event(i, run + "s")),
                                     headers={"Content-Type": "application/json"})
                response.raise_for_status()
            one_by_one = single / (time.perf_counter() - start)
        print(f"HTTP ingest: batches of 1,000 {batched:,.0f} events/s ({events:,} events), "
              f"one event per request {one_by_one:,.0f} events/s ({single:,}), ratio {batched / one_by_one:.0f}x")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the store for /metrics")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ingest-events", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=1_000, help="events sent one per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        with Store.open(url) as store:
            if store.count() < args.events:
                fill(store, args.events - store.count())
            bench_metrics(store, args.rounds)
        bench_ingest(url, args.ingest_events, args.single)


if __name__ == "__main__":
    main()
