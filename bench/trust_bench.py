"""What issue 5's protections cost: this tree against the tree before them, in the same run.

The baseline is voxtrail at ``--baseline`` (default: the last commit before issue 5), checked
out in a temporary git worktree and run from there with PYTHONPATH; both use this venv's
packages. Rounds alternate baseline and current so machine noise hits both; medians and ratios
are printed. The difference is everything issue 5 added to the write path: the row hashes and
chain links, masking, the retention horizon check, and (for the audit variant) encryption.

(a) import: ``voxtrail import`` of seed 000's log format (1,000,000 lines by default) into a
    fresh SQLite file;
(b) Recorder throughput: record N events (seed 004's fields, text included), then drain them
    into a fresh SQLite file (``recorder_bench.throughput``), events/s;
Each part also runs this tree with the chain patched out (row hashes NULL, no links), so the
chain's own cost is printed beside the cost of everything issue 5 added.
(c) seal alone: in this process, the time ``chain.seal`` takes on a 20,000-event batch against
    ``Store.encode`` of the same batch.

    python bench/trust_bench.py
    python bench/trust_bench.py --lines 200000 --events 50000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = "0650a9d"  # main before issue 5 (Trust)
sys.path.insert(0, str(HERE))


def worktree(rev: str, where: Path) -> Path:
    tree = where / f"baseline-{rev}"
    done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"cannot check out the baseline {rev}: {done.stderr.strip()}")
    return tree


def env_for(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree / "src"), "XDG_CONFIG_HOME": str(tree / ".xdg")}


#: This tree with the hash chain taken out, to measure the chain alone: row hashes left NULL,
#: no links. Patched in by the benchmark only; voxtrail itself has no switch for it.
WITHOUT_CHAIN = """
import polars as pl
from voxtrail.store import chain
_seal = chain.seal
def seal(frame, constants):
    plain = frame.drop("row_hash", strict=False)
    return chain.Sealed(plain.with_columns(pl.lit(None, dtype=pl.Utf8).alias("row_hash")), constants)
chain.seal = seal
chain.link_write = lambda *args, **kwargs: None
"""


def import_once(tree: Path, log: str, workdir: Path, patch: str = "") -> float:
    db = workdir / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    args = ["import", log, "--db", f"sqlite:///{db}", "--format", "text", "--tz", "UTC"]
    cmd = [sys.executable, "-c", f"{patch}\nfrom voxtrail.cli import main\nmain({args!r})"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env_for(tree), check=True, capture_output=True)
    return time.perf_counter() - t0


RECORDER = """
import json, sys, tempfile
sys.path.insert(0, {bench!r})
from recorder_bench import throughput
work = tempfile.mkdtemp()
print(json.dumps(throughput("sqlite:///" + work + "/r.db", work + "/spool", {events})))
"""


def recorder_once(tree: Path, events: int, patch: str = "") -> dict:
    code = patch + RECORDER.format(bench=str(tree / "bench"), events=events)
    out = subprocess.run([sys.executable, "-c", code], env=env_for(tree), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def seal_share(events: int = 20_000) -> tuple[float, float]:
    """Median seconds of chain.seal and of Store.encode on the same batch (this tree)."""
    from datetime import datetime, timedelta

    from voxtrail.event import EventBatch
    from voxtrail.store import Store
    from voxtrail.store.bulk import prepare
    from voxtrail.store.chain import seal

    start = datetime(2026, 11, 1)
    batch = EventBatch.from_records(
        {"request_id": f"r{i:08d}", "ts": start + timedelta(seconds=i), "status": "success", "level": "INFO",
         "emotion": "calm", "latency_ms": 1000.0 + i % 977, "text_length": 20 + i % 300, "source": "file",
         "source_offset": i * 88} for i in range(events))
    work = tempfile.mkdtemp()
    with Store.open(f"sqlite:///{work}/s.db") as store:
        prepared = prepare(batch)
        seals, encodes = [], []
        for _ in range(7):
            t0 = time.perf_counter()
            seal(prepared.frame, prepared.constants)
            t1 = time.perf_counter()
            store.encode(batch)
            t2 = time.perf_counter()
            seals.append(t1 - t0)
            encodes.append(t2 - t1)
    shutil.rmtree(work, ignore_errors=True)
    return statistics.median(seals), statistics.median(encodes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", default="abc")
    args = ap.parse_args()
    from import_bench import generate

    work = Path(tempfile.mkdtemp(prefix="vx-trust-"))
    base = worktree(args.baseline, work)
    try:
        print(f"baseline {args.baseline} vs this tree, {args.rounds} round(s), {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.1f}")
        if "a" in args.parts:
            log = str(work / "seed.log")
            generate(log, args.lines)
            times = {"baseline": [], "no chain": [], "current": []}
            for _ in range(args.rounds):
                times["baseline"].append(import_once(base, log, work))
                times["no chain"].append(import_once(ROOT, log, work, WITHOUT_CHAIN))
                times["current"].append(import_once(ROOT, log, work))
            b, n, c = (statistics.median(times[k]) for k in ("baseline", "no chain", "current"))
            print(f"(a) import {args.lines:,} lines into SQLite, medians: before issue 5 {b:.2f} s, this tree "
                  f"without the chain {n:.2f} s, this tree {c:.2f} s")
            print(f"    the chain costs {100 * (c / n - 1):+.1f}%; all of issue 5 {100 * (c / b - 1):+.1f}% "
                  f"(runs: {', '.join(f'{k} {[round(x, 2) for x in v]}' for k, v in times.items())})")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "voxtrail", "verify", "--db", f"sqlite:///{work / 'bench.db'}"],
                           env=env_for(ROOT), check=True, capture_output=True)
            v = time.perf_counter() - t0
            print(f"    voxtrail verify of those {args.lines:,} events: {v:.1f} s ({args.lines / v:,.0f} rows/s)")
        if "b" in args.parts:
            variants = (("baseline", base, ""), ("no chain", ROOT, WITHOUT_CHAIN), ("current", ROOT, ""))
            rates: dict[str, list] = {name: [] for name, _, _ in variants}
            cpu: dict[str, list] = {name: [] for name, _, _ in variants}
            for _ in range(args.rounds):
                for name, tree, patch in variants:
                    r = recorder_once(tree, args.events, patch)
                    rates[name].append(r["rate"])
                    cpu[name].append(r["cpu_us"])
            b, n, c = (statistics.median(rates[k]) for k in ("baseline", "no chain", "current"))
            bc, nc, cc = (statistics.median(cpu[k]) for k in ("baseline", "no chain", "current"))
            print(f"(b) Recorder, {args.events:,} events into SQLite, medians: before issue 5 {b:,.0f}/s "
                  f"({bc:.1f} µs CPU/event), without the chain {n:,.0f}/s ({nc:.1f} µs), this tree {c:,.0f}/s "
                  f"({cc:.1f} µs)")
            print(f"    the chain costs {100 * (1 - c / n):+.1f}% of throughput; all of issue 5 {100 * (1 - c / b):+.1f}% "
                  f"(rates: {', '.join(f'{k} {[round(x) for x in v]}' for k, v in rates.items())})")
        if "c" in args.parts:
            s, e = seal_share()
            print(f"(c) chain.seal on 20,000 events: median {s * 1e3:.1f} ms = {s / 20_000 * 1e6:.2f} µs/event, "
                  f"{100 * s / e:.0f}% of Store.encode ({e * 1e3:.1f} ms)")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
