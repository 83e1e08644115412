"""Dashboard benchmark: every panel of a 30-day view over 10M events, against seed 000's queries.

    python bench/dashboard_bench.py                   # 10,000,000 events, 7 rounds
    python bench/dashboard_bench.py --events 1000000 --rounds 3

Builds once (cached in bench/out/, rebuilt when --events or --seed change):
  - a voxtrail SQLite database with the synthetic month (voxtrail.demo.synthetic, 30 days ending
    2026-11-01 00:00 UTC, without text_input to keep the file small), written through the normal
    write path, Store.write, which maintains the rollups;
  - seed 000's table, ``tts_logs (id, timestamp, text_length, emotion, response_time, success)``,
    holding the same rows (response_time in seconds, success 0/1), in its own SQLite file.
Then times, alternating round by round in one run:
  (a) voxtrail: ``dashboard(store, Filters.last("30d"))``, all 14 panels computed server-side;
  (b) seed 000: its three queries (per day, per emotion, per text-length class) on its table;
and also voxtrail's 24-hour view, a filtered view (one node + one emotion) and the 30-day view
in Asia/Shanghai time. Prints medians and the ratio (b) / (a).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
END = datetime(2026, 11, 1, tzinfo=timezone.utc)

SEED_QUERIES = (
    """SELECT DATE(timestamp) AS date, COUNT(*) AS total_calls, AVG(response_time) AS avg_latency,
              AVG(success) * 100 AS success_rate_pct
       FROM tts_logs GROUP BY DATE(timestamp) ORDER BY date DESC LIMIT 30""",
    """SELECT emotion, COUNT(*) AS call_count, AVG(response_time) AS avg_duration,
              SUM(success) * 100.0 / COUNT(*) AS success_rate
       FROM tts_logs GROUP BY emotion ORDER BY call_count DESC""",
    """SELECT CASE WHEN text_length < 50 THEN '短文本 (<50)' WHEN text_length < 150 THEN '中等文本 (50-150)'
                   ELSE '长文本 (>150)' END AS text_category,
              AVG(response_time) AS avg_latency, COUNT(*) AS count
       FROM tts_logs WHERE success = 1 GROUP BY text_category""",
)


def build(events: int, seed: int) -> tuple[Path, Path]:
    from voxtrail.demo.synthetic import SyntheticMonth, generate
    from voxtrail.store.api import Store

    OUT.mkdir(exist_ok=True)
    tag = f"{events}_{seed}"
    vx, seed_db, done = OUT / f"voxtrail_{tag}.db", OUT / f"seed000_{tag}.db", OUT / f"built_{tag}.json"
    if done.exists() and vx.exists() and seed_db.exists():
        return vx, seed_db
    for path in (vx, seed_db, Path(f"{vx}-wal"), Path(f"{vx}-shm")):
        path.unlink(missing_ok=True)
    started = time.perf_counter()
    spec = SyntheticMonth(events=events, days=30, end=END, seed=seed, chunk_size=200_000, texts=False)
    with Store.open(f"sqlite:///{vx}") as store:
        for i, batch in enumerate(generate(spec)):
            store.write(batch)
            print(f"\rwriting voxtrail database: {(i + 1) * spec.chunk_size:,} / {events:,}", end="", file=sys.stderr)
    took = time.perf_counter() - started
    print(f"\nwrote {events:,} events through Store.write in {took:.0f} s ({events / took:,.0f}/s)", file=sys.stderr)
    conn = sqlite3.connect(seed_db, isolation_level=None)
    conn.execute("""CREATE TABLE tts_logs (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT,
                    text_length INTEGER, emotion TEXT, response_time REAL, success INTEGER)""")
    conn.execute("ATTACH ? AS vx", (str(vx),))
    conn.execute("BEGIN")
    conn.execute("""INSERT INTO tts_logs (timestamp, text_length, emotion, response_time, success)
                    SELECT substr(ts, 1, 19), text_length, emotion, latency_ms / 1000.0,
                           CASE status WHEN 'success' THEN 1 ELSE 0 END
                    FROM vx.tts_events ORDER BY id""")
    conn.execute("COMMIT")
    conn.execute("DETACH vx")
    conn.close()
    done.write_text(json.dumps({"events": events, "seed": seed, "write_seconds": took}))
    return vx, seed_db


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    vx, seed_db = build(args.events, args.seed)
    from voxtrail.query.filters import Filters
    from voxtrail.query.panels import dashboard
    from voxtrail.store.api import Store

    views = {
        "30d": Filters.last("30d", now=END),
        "24h": Filters.last("24h", now=END),
        "30d node=tts-a emotion=happy": Filters.last("30d", now=END, node=("tts-a",), emotion=("happy",)),
        "30d tz=Asia/Shanghai": Filters.last("30d", now=END, tz="Asia/Shanghai"),
    }
    store = Store.open(f"sqlite:///{vx}")
    seed_conn = sqlite3.connect(seed_db)
    times: dict[str, list[float]] = {name: [] for name in views}
    cpu: dict[str, list[float]] = {name: [] for name in views}
    times["seed 000's 3 queries"] = []
    cpu["seed 000's 3 queries"] = []
    for _ in range(args.rounds):
        for name, f in views.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            result = dashboard(store, f)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
            assert not result["panels"]["summary"]["empty"]
        started, cpu_started = time.perf_counter(), time.process_time()
        for sql in SEED_QUERIES:
            seed_conn.execute(sql).fetchall()
        times["seed 000's 3 queries"].append(time.perf_counter() - started)
        cpu["seed 000's 3 queries"].append(time.process_time() - cpu_started)
    store.close()

    seed_ms, seed_cpu = median_ms(times["seed 000's 3 queries"]), median_ms(cpu["seed 000's 3 queries"])
    print(f"{args.events:,} events over 30 days, {args.rounds} rounds, {os.cpu_count()} cores, SQLite "
          f"{sqlite3.sqlite_version}, load average {os.getloadavg()[0]:.1f}")
    print("medians: wall time (CPU time of this process: what the server spends, whatever else runs)")
    print(f"seed 000's 3 queries on its table:          {seed_ms:9.1f} ms ({seed_cpu:9.1f} ms CPU)")
    for name in views:
        ms, cpu_ms = median_ms(times[name]), median_ms(cpu[name])
        print(f"voxtrail, all 14 panels, {name:<30} {ms:7.1f} ms ({cpu_ms:7.1f} ms CPU)"
              f"   {seed_ms / ms:,.1f}x faster than seed 000 ({seed_cpu / cpu_ms:,.1f}x in CPU)")


if __name__ == "__main__":
    main()
