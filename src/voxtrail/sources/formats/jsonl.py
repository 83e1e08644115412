"""``jsonl`` (seed 000's recommended JSON log line) and ``audit`` (seed 004's generation records).

``{"time": "2025-04-05T10:23:45", "text_len": 120, "emotion": "happy", "duration": 2.3, "success": true}``
and one ``tts_generation_log`` row a line (``request_id``, ``status``, ``created_at``, ...).
The mapping itself lives in :mod:`.json_records`; this module only states what differs.
"""

from __future__ import annotations

from voxtrail.sources.formats import register
from voxtrail.sources.formats.json_records import JsonRecords, _seconds_to_ms, _success

JSONL = register(JsonRecords(
    "jsonl",
    time_key="time",
    status_key="success",
    aliases={"time": ("ts", None), "text_len": ("text_length", None), "duration": ("latency_ms", _seconds_to_ms),
             "success": ("status", _success)},
    require_request_id=False,
    sniff_keys=("time|ts", "success|status"),
))

# Audit records carry their own request id (a UUID): importing them from any file dedupes.
AUDIT = register(JsonRecords(
    "audit",
    time_key="created_at",
    status_key="status",
    aliases={"created_at": ("ts", None)},
    require_request_id=True,
    sniff_keys=("request_id", "created_at", "status"),
))
