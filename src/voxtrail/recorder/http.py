"""HTTP transport: spooled events POSTed as NDJSON to a collector (``voxtrail serve``).

Protocol: contract B (``POST /api/v1/events``, bearer token, all-or-nothing batches). The
collector's answer decides what happens to a batch:

- 200: delivered (duplicates count as delivered: the endpoint is idempotent on request_id; events
  the collector's store quarantined, listed in the answer's ``rejects``, are its ``tts_rejects``);
- 401/403 (token missing, wrong or revoked), 429, 5xx, no answer: :class:`Retry`, with backoff;
  the events wait in the spool until the token or the server is fixed;
- 413: the batch is split in halves and sent again; a single event too large for the collector
  is refused like a 400;
- any other 4xx is a *poison* batch that will never be accepted: the event the server names
  (or the whole slice when it names none) is moved to ``<spool_dir>/rejected/`` with the
  server's reason, counted in ``stats()["rejected"]`` and logged, and the rest is sent again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from voxtrail.redact import mask_url
from voxtrail.recorder.transports import Delivered, Retry, SpoolBatch, set_aside

log = logging.getLogger("voxtrail.recorder")
ENDPOINT = "/api/v1/events"
_RETRY_STATUS = {401, 403, 408, 429}


def endpoint_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith(ENDPOINT) else url + ENDPOINT


def _reason(response) -> tuple[str, int | None]:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}", None
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}: {str(body)[:200]}", None
    index = body.get("event")
    return f"HTTP {response.status_code}: {body.get('error')}", index if isinstance(index, int) else None


class HttpTransport:
    name = "http"

    def __init__(self, url: str, token: str | None, *, timeout: float, spool_dir: Path):
        import httpx

        self._httpx = httpx
        self.url = endpoint_url(url)
        self.shown = mask_url(self.url)
        headers = {"Content-Type": "application/x-ndjson", "User-Agent": "voxtrail-recorder"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.spool_dir = spool_dir
        self.max_events: int | None = None  # learnt from 413 answers

    def prepare(self, batch: SpoolBatch) -> SpoolBatch:
        return batch  # sent as spooled: nothing to prepare

    def deliver(self, batch: SpoolBatch) -> Delivered:
        done = Delivered()
        pending = list(batch.payloads)
        while pending:
            size = min(len(pending), self.max_events or len(pending))
            part = pending[:size]
            response = self._post(b"\n".join(part))
            status = response.status_code
            if status == 200:
                body = response.json()
                done.inserted += int(body.get("inserted", 0))
                done.duplicates += int(body.get("duplicates", 0))
                done.rejected += int(body.get("rejected", 0))  # quarantined by the collector's store
                del pending[:size]
            elif status == 413 and size > 1:
                self.max_events = size // 2
            elif status in _RETRY_STATUS or status >= 500 or status < 400:
                reason, _ = _reason(response)
                hint = "; check the token (voxtrail token create NAME --scope ingest)" if status in (401, 403) else ""
                raise Retry(f"collector {self.shown} answered {reason}{hint}")
            else:
                reason, index = _reason(response)
                bad = [index] if index is not None and 0 <= index < size else list(range(size))
                self._reject([part[i] for i in bad], reason)
                done.rejected += len(bad)
                for i in sorted(bad, reverse=True):
                    del pending[i]
        return done

    def _post(self, body: bytes):
        try:
            return self.client.post(self.url, content=body)
        except self._httpx.HTTPError as exc:
            raise Retry(f"cannot reach collector {self.shown}: {exc or type(exc).__name__}") from exc

    def _reject(self, payloads: list[bytes], reason: str) -> None:
        path = set_aside(self.spool_dir, payloads, reason)
        log.warning("voxtrail: the collector refused %d event(s): %s; kept in %s", len(payloads), reason, path)

    def close(self) -> None:
        self.client.close()
