"""``VoxtrailHandler``: log records that carry generation fields become events.

For services that already log each generation::

    log.info("generated", extra={"text_input": text, "latency_ms": ms, "emotion": "happy"})
    log.error("generation failed", extra={"request_id": rid, "error_type": "OOM"})

A record becomes an event when at least one ``extra=`` key is an event field; a record with
none (ordinary logging) is ignored, so the handler can sit on the root logger. ``level`` is the
record's level name, ``ts`` its creation time. The message goes to ``error_message`` for ERROR
and above (unless the record sets one), else to ``attributes.message``; ``status`` defaults to
``failed`` for ERROR and above and ``success`` below. An exception attached to the record
(``log.exception``) fills ``error_type`` / ``error_message``. Extra keys that are not event
fields are not recorded (a record's ``extra`` also carries unrelated context).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from voxtrail.recorder.core import RECORDABLE
from voxtrail.recorder.generation import error_type

if TYPE_CHECKING:
    from voxtrail.recorder.core import Recorder


class VoxtrailHandler(logging.Handler):
    def __init__(self, recorder: "Recorder", level: int = logging.NOTSET):
        super().__init__(level)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: v for k, v in record.__dict__.items() if k in RECORDABLE}
        if not fields:
            return
        try:
            failed = record.levelno >= logging.ERROR
            fields.setdefault("level", record.levelname)
            fields.setdefault("ts", datetime.fromtimestamp(record.created, timezone.utc))
            fields.setdefault("status", "failed" if failed else "success")
            attributes = dict(fields.get("attributes") or {})
            attributes.setdefault("logger", record.name)
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                fields.setdefault("error_type", error_type(exc))
                fields.setdefault("error_message", str(exc))
            if failed and "error_message" not in fields:
                fields["error_message"] = message
            elif message:
                attributes.setdefault("message", message)
            fields["attributes"] = attributes
            self.recorder.record_event(fields)
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.handleError(record)
