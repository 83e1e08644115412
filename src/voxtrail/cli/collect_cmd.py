"""``voxtrail collect``: move events from a Redis stream (recorders on many nodes) to the database."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

import click

from voxtrail.cli.common import db_options, opened_store
from voxtrail.cli.output import err_console, fail, plain, print_json
from voxtrail.cli.params import Name, Seconds


@click.command("collect")
@click.option("--redis", "redis_url", required=True, metavar="URL", envvar="VOXTRAIL_REDIS",
              help="Redis server, e.g. redis://127.0.0.1:6379/0. Env: VOXTRAIL_REDIS.")
@click.option("--stream", type=Name(), default="voxtrail:events", show_default=True,
              help="Stream the recorders append to.")
@click.option("--group", type=Name(), default="voxtrail", show_default=True,
              help="Consumer group shared by all collectors of this stream.")
@click.option("--consumer", type=Name(), metavar="NAME",
              help="This collector's name in the group (default: host-pid). Restarted under the same name, "
                   "it first finishes its own pending entries.")
@db_options
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2000, show_default=True,
              help="Entries read and written per transaction.")
@click.option("--claim-idle", type=Seconds(0.1), default=30.0, show_default=True,
              help="Seconds after which entries left pending by a dead collector are taken over.")
@click.option("--keep-entries", is_flag=True, help="Acknowledge entries but do not delete them from the stream.")
@click.option("--drain", is_flag=True, help="Exit once the stream has nothing new and nothing pending.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as a JSON object on exit.")
def collect_command(redis_url, stream, group, consumer, db, config_file, batch_size, claim_idle, keep_entries,
                    drain, as_json) -> None:
    """Write events from a Redis stream to the database, acknowledging only what is committed.

    Run as many collectors as you like on the same --group: each event is stored once. A
    collector killed mid-batch loses nothing: its entries are taken over by another collector
    (or by itself when restarted under the same --consumer) after --claim-idle seconds.
    Stops on Ctrl-C or SIGTERM after the batch in hand.
    """
    import redis

    from voxtrail.sources.redis_stream import RedisUnavailable, StreamCollector
    from voxtrail.redact import mask_url

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=30, socket_connect_timeout=5)
    except ValueError as exc:
        fail(f"invalid Redis URL {mask_url(redis_url)!r}: {exc}; expected e.g. redis://127.0.0.1:6379/0")
    name = consumer or f"{socket.gethostname()}-{os.getpid()}"
    with opened_store(db, None, config_file) as (store, _):
        collector = StreamCollector(client, store, stream=stream, group=group, consumer=name, batch_size=batch_size,
                                    claim_idle=claim_idle, delete_acked=not keep_entries)
        try:
            collector.prepare()
        except RedisUnavailable as exc:
            fail(f"{exc} ({mask_url(redis_url)})")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        if not as_json:
            logging.basicConfig(format="%(message)s")
            err_console.print(plain(f"collecting {stream} (group {group}, consumer {name}) into {store.display_url}"
                                    + ("" if drain else "; Ctrl-C to stop")))
        try:
            stats = collector.run(stop, until_empty=drain)
        except RedisUnavailable as exc:
            fail(f"{exc} ({mask_url(redis_url)})")
        finally:
            client.close()
    if as_json:
        print_json({"stream": stream, "group": group, "consumer": name, **stats.as_dict()})
    else:
        err_console.print(f"{stats.events:,} events from {stats.entries:,} entries: {stats.inserted:,} inserted, "
                          f"{stats.duplicates:,} duplicates, {stats.rejected:,} rejected")
