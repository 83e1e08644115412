"""Import benchmark: voxtrail against seed 000's import script, side by side in one run.

    python bench/import_bench.py                 # 1,000,000 lines, 3 rounds, SQLite + PostgreSQL + MariaDB
    python bench/import_bench.py --lines 200000 --rounds 1 --no-servers

It generates seed-format lines (`[ts] INFO - TextLen=.., Emotion=.., Duration=..s, Success=..`),
then times, each in its own process so start-up and peak memory are counted:
  (a) the baseline: what seed 000's script does (re.search per line, one INSERT per line into
      SQLite, one commit at the end);
  (b) `voxtrail import` into a fresh SQLite file.
Rounds alternate (a) and (b) so machine noise hits both; medians and their ratio are printed.
It then imports the same file into fresh PostgreSQL and MariaDB databases and prints lines/s.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta

EMOTIONS = ["happy", "sad", "angry", "calm", "surprised", "melancholic", "afraid", "disgusted", "兴奋", "愤怒", "温柔"]

# Seed 000's script, with its regex as published (the article lost `=` and `+` to HTML).
BASELINE = r'''
import re, sqlite3, sys
def parse_log_line(line):
    pattern = r'\[(.*?)\].*TextLen=(\d+), Emotion=(\w+), Duration=([\d.]+)s, Success=(\w+)'
    match = re.search(pattern, line)
    if match:
        timestamp, text_len, emotion, duration, success = match.groups()
        return {"timestamp": timestamp, "text_length": int(text_len), "emotion": emotion,
                "response_time": float(duration), "success": 1 if success == "True" else 0}
    return None
conn = sqlite3.connect(sys.argv[2])
cursor = conn.cursor()
cursor.execute("""CREATE TABLE IF NOT EXISTS tts_logs (id INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp TEXT, text_length INTEGER, emotion TEXT, response_time REAL, success INTEGER)""")
with open(sys.argv[1], "r") as f:
    for line in f:
        record = parse_log_line(line)
        if record:
            cursor.execute("INSERT INTO tts_logs (timestamp, text_length, emotion, response_time, success) VALUES (?, ?, ?, ?, ?)",
                (record["timestamp"], record["text_length"], record["emotion"], record["response_time"], record["success"]))
conn.commit()
conn.close()
'''


def generate(path: str, lines: int, seed: int = 20250301) -> None:
    rng = random.Random(seed)
    t = datetime(2025, 3, 1)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            t += timedelta(seconds=rng.random() * 2.5)
            ok = rng.random() > 0.05
            ms = f",{rng.randrange(1000):03d}" if rng.random() < 0.3 else ""
            f.write(
                f"[{t:%Y-%m-%d %H:%M:%S}{ms}] {'INFO' if ok else 'ERROR'} - TextLen={rng.randint(1, 600)}, "
                f"Emotion={rng.choice(EMOTIONS)}, Duration={rng.random() * 12:.1f}s, Success={ok}\n"
            )


# SQLite's own cost of storing the rows, with no parsing and no Python per row: copy the rows
# voxtrail stored into a fresh database with the same tables and indexes, by INSERT ... SELECT.
FLOOR = r'''
import sqlite3, sys, time
src, dst = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(dst, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL"); conn.execute("PRAGMA synchronous=NORMAL")
conn.execute("ATTACH ? AS src", (src,))
for (sql,) in conn.execute("SELECT sql FROM src.sqlite_master WHERE tbl_name = 'tts_events' AND sql IS NOT NULL").fetchall():
    conn.execute(sql)
cols = ", ".join(r[1] for r in conn.execute("PRAGMA src.table_info(tts_events)") if r[1] != "id")
started = time.perf_counter()
conn.execute("BEGIN IMMEDIATE")
conn.execute(f"INSERT INTO main.tts_events ({cols}) SELECT {cols} FROM src.tts_events ORDER BY id")
conn.execute("COMMIT")
print(time.perf_counter() - started)
'''


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"command failed ({status}): {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024


def voxtrail_cmd(log: str, url: str) -> list[str]:
    exe = shutil.which("voxtrail") or os.path.join(os.path.dirname(sys.executable), "voxtrail")
    return [exe, "import", log, "--db", url, "--format", "text", "--tz", "UTC", "--no-progress", "--json"]


def sqlite_rounds(log: str, workdir: str, rounds: int) -> dict:
    base_times, vox_times, base_mem, vox_mem, floors = [], [], [], [], []
    for i in range(rounds):
        for target in ("baseline", "voxtrail"):
            db = os.path.join(workdir, f"{target}-{i}.db")
            if target == "baseline":
                t, m = timed([sys.executable, "-c", BASELINE, log, db])
                base_times.append(t), base_mem.append(m)
            else:
                t, m = timed(voxtrail_cmd(log, f"sqlite:///{db}"))
                vox_times.append(t), vox_mem.append(m)
                floor_db = os.path.join(workdir, "floor.db")
                out = subprocess.run([sys.executable, "-c", FLOOR, db, floor_db], capture_output=True, text=True, check=True)
                floors.append(float(out.stdout))
                _remove_sqlite(floor_db)
            _remove_sqlite(db)
    return {
        "floor_s": statistics.median(floors),
        "baseline_s": statistics.median(base_times),
        "voxtrail_s": statistics.median(vox_times),
        "baseline_all": base_times,
        "voxtrail_all": vox_times,
        "baseline_peak_mb": max(base_mem),
        "voxtrail_peak_mb": max(vox_mem),
    }


def _remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


def server_rate(log: str, lines: int, dialect: str) -> float | None:
    """lines/s of `voxtrail import` into a fresh database on the local server, or None."""
    import sqlalchemy as sa

    name = "vxbench_" + uuid.uuid4().hex[:8]
    admin = {"postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
             "mysql": "mysql+pymysql://root@127.0.0.1:3306/test"}[dialect]
    url = {"postgresql": f"postgresql://postgres@127.0.0.1:5432/{name}",
           "mysql": f"mysql://root@127.0.0.1:3306/{name}"}[dialect]
    try:
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except Exception as exc:  # the report says which server was missing
        print(f"  {dialect}: server unavailable ({exc.__class__.__name__}); skipped", file=sys.stderr)
        return None
    try:
        elapsed, _ = timed(voxtrail_cmd(log, url))
        return lines / elapsed
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name}")
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-servers", action="store_true", help="skip PostgreSQL and MariaDB")
    args = ap.parse_args()

    workdir = tempfile.mkdtemp(prefix="vxbench-")
    try:
        log = os.path.join(workdir, "tts.log")
        generate(log, args.lines)
        size_mb = os.path.getsize(log) / 1e6
        print(f"{args.lines:,} lines, {size_mb:.0f} MB, {args.rounds} rounds, {os.cpu_count()} cores")
        r = sqlite_rounds(log, workdir, args.rounds)
        ratio = r["baseline_s"] / r["voxtrail_s"]
        print(f"baseline (seed 000 script) into SQLite: median {r['baseline_s']:.2f} s "
              f"({args.lines / r['baseline_s']:,.0f} lines/s), peak {r['baseline_peak_mb']:.0f} MB  "
              f"runs: {', '.join(f'{t:.2f}' for t in r['baseline_all'])}")
        print(f"voxtrail import into SQLite:           median {r['voxtrail_s']:.2f} s "
              f"({args.lines / r['voxtrail_s']:,.0f} lines/s), peak {r['voxtrail_peak_mb']:.0f} MB  "
              f"runs: {', '.join(f'{t:.2f}' for t in r['voxtrail_all'])}")
        print(f"ratio (baseline / voxtrail): {ratio:.2f}x")
        print(f"SQLite floor: storing the same rows in the same table and indexes by INSERT ... SELECT "
              f"(no parsing, no Python per row) takes {r['floor_s']:.2f} s; baseline / floor = "
              f"{r['baseline_s'] / r['floor_s']:.2f}x is the most any importer could reach on this schema")
        if not args.no_servers:
            for dialect, label in (("postgresql", "PostgreSQL"), ("mysql", "MariaDB")):
                rate = server_rate(log, args.lines, dialect)
                if rate is not None:
                    print(f"voxtrail import into {label}: {rate:,.0f} lines/s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
