"""Work ``voxtrail serve`` does on a schedule: retention (``voxtrail purge``) once a day.

The purge runs in a worker thread, batch by batch, so requests keep being served; every run is
logged with its counts (what it deleted, or that there was nothing to delete); a failure is
logged and retried at the next run, never fatal to the server.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from voxtrail.store import Store, StoreError, purge

log = logging.getLogger("voxtrail.retention")


async def purge_periodically(store: Store, retention: purge.Retention, every: timedelta,
                             first_after: timedelta = timedelta(seconds=60)) -> None:
    delay = first_after.total_seconds()
    while True:
        await asyncio.sleep(delay)
        delay = every.total_seconds()
        try:
            result = await asyncio.to_thread(purge_once, store, retention)
        except StoreError as exc:
            log.warning("retention purge failed, next try in %s: %s", every, exc)
            continue
        from voxtrail.cli.purge_cmd import describe

        log.info("retention: %s; next run in %s", describe(result, store.display_url), purge.age_text(every))


def purge_once(store: Store, retention: purge.Retention) -> purge.PurgeResult:
    return purge.purge(store.engine, store.dialect, retention.cutoffs(purge.utcnow()))
