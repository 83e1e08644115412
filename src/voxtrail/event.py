"""The event: one TTS generation, the only thing that flows from sources to the store.

Every source (log files of any format, later the recorder, HTTP ingest and Redis) produces
events with the fields below and nothing else; every view reads them from ``tts_events``.
The list is the single source of truth for the table definition, the bulk writers, the
column documentation (``docs/schema.md`` is checked against it by a test) and validation.

In flight, events travel in columnar batches: an :class:`EventBatch` wraps a polars
DataFrame whose columns are a subset of :data:`FIELDS` (absent columns are NULL). Batching is
what makes vectorised parsing and bulk insertion possible; a single event is a batch of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

import polars as pl

Kind = Literal["id", "text", "string", "int", "float", "timestamp", "json"]

#: Emotion labels of IndexTTS2's 8-weight emotion vector, in vector order.
EMOTION_VECTOR_LABELS = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")

#: IndexTTS2 WebUI ``Emo control mode`` index -> the name stored in ``emotion_control``.
EMOTION_CONTROL_MODES = {0: "speaker", 1: "audio", 2: "vector", 3: "text"}

STATUS_VALUES = ("success", "failed")


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    doc: str
    length: int | None = None  # for kind == "string": the VARCHAR length
    nullable: bool = True
    unit: str | None = None


FIELDS: tuple[Field, ...] = (
    Field("request_id", "string", "Unique id of the generation. From the record when it has one (seed 004's UUID); "
          "for a log line without one, `<stream>-<offset>`: the file's fingerprint and the line's byte offset, "
          "so importing the same line twice stores it once.", length=128, nullable=False),
    Field("ts", "timestamp", "When the generation happened (request completion for log lines, `created_at` for "
          "audit records), in UTC with microseconds. Naive source times are read in the configured time zone.",
          nullable=False),
    Field("status", "string", "`success` or `failed`.", length=16, nullable=False),
    Field("level", "string", "Log level of the source line (`INFO`, `ERROR`, ...), when the source has one.", length=16),
    Field("emotion", "string", "Emotion label as the source names it (`happy`, `sad`, Chinese words such as `愤怒`). "
          "For IndexTTS2 console blocks with a vector, the label with the largest weight.", length=64),
    Field("latency_ms", "float", "Time the generation took, in milliseconds (seed 000's `Duration`, IndexTTS2's "
          "`Total inference time`).", unit="ms"),
    Field("text_length", "int", "Length of the input text in characters.", unit="characters"),
    Field("user_id", "string", "Who asked for the generation (seed 004's `user_id`, stored as text so that "
          "numeric ids, names and UUIDs all fit).", length=128),
    Field("text_input", "text", "The text that was synthesised, with personal data masked (docs/masking.md); "
          "encrypted at rest when configured (docs/encryption.md)."),
    Field("pinyin_input", "text", "Pinyin corrections supplied with the text (masked like `text_input`)."),
    Field("ref_audio_url", "text", "Location of the reference (voice prompt) audio. Encrypted at rest by default: "
          "stored as `vx1:<key id>:<AES-256-GCM ciphertext>` (docs/encryption.md)."),
    Field("ref_audio_sha256", "string", "SHA-256 of the reference audio, when the source computed it.", length=64),
    Field("emotion_desc", "text", "Emotion described in natural language (e.g. `温柔地说`), masked like `text_input`."),
    Field("emotion_vector", "json", "The 8 emotion weights as a JSON array, in the order happy, angry, sad, afraid, "
          "disgusted, melancholic, surprised, calm."),
    Field("emotion_control", "string", "How the emotion was controlled: `speaker` (same as the voice prompt), "
          "`audio` (an emotion reference audio), `vector` (8 weights) or `text` (described in text).", length=16),
    Field("emo_alpha", "float", "IndexTTS2's emotion weight (`emo_alpha`, the WebUI's `weight`)."),
    Field("target_duration_ratio", "float", "Requested duration ratio (seed 004's `target_duration_ratio`)."),
    Field("mode", "string", "Seed 004's duration mode: `controlled` or `free`.", length=16),
    Field("error_type", "string", "Exception class of a failure (e.g. `torch.OutOfMemoryError`).", length=256),
    Field("error_message", "text", "Error message of a failure, masked like `text_input`."),
    Field("output_audio_url", "text", "Where the generated audio was written (URL or file path); encrypted at rest "
          "when configured."),
    Field("output_audio_sha256", "string", "SHA-256 of the generated audio, when the source computed it.", length=64),
    Field("audio_length_ms", "float", "Length of the generated audio, in milliseconds.", unit="ms"),
    Field("rtf", "float", "Real-time factor: inference time divided by generated audio length."),
    Field("gpt_gen_ms", "float", "IndexTTS2 stage time `gpt_gen_time`, in milliseconds.", unit="ms"),
    Field("gpt_forward_ms", "float", "IndexTTS2 stage time `gpt_forward_time`, in milliseconds.", unit="ms"),
    Field("s2mel_ms", "float", "IndexTTS2 stage time `s2mel_time`, in milliseconds.", unit="ms"),
    Field("bigvgan_ms", "float", "IndexTTS2 stage time `bigvgan_time`, in milliseconds.", unit="ms"),
    Field("queue_wait_ms", "float", "Time the request waited before generation started, in milliseconds.", unit="ms"),
    Field("node", "string", "Machine or instance that served the request.", length=128),
    Field("model", "string", "Model name (e.g. `IndexTTS2`).", length=128),
    Field("model_version", "string", "Model version, for A/B comparisons.", length=64),
    Field("source", "string", "How the record arrived: `file` (imported logs), `recorder` (the Python Recorder "
          "in the TTS service), `http` (`POST /api/v1/events`) or `redis` (a Redis stream collector).",
          length=16, nullable=False),
    Field("source_format", "string", "Format of the source: `text`, `jsonl`, `audit` or `indextts` for files.",
          length=16),
    Field("source_file", "text", "Path of the file the event was read from, as given to the importer."),
    Field("source_offset", "int", "Byte offset of the event's first line in the (decompressed) file.", unit="bytes"),
    Field("attributes", "json", "Free-form JSON object: fields of the source record that have no column, and "
          "facts such as `ts_estimated`."),
    Field("row_hash", "string", "Integrity hash, set by the store: SHA-256 of the event's content (encrypted "
          "fields as plaintext) and of the previous event's `request_id` in the same write. Each write's "
          "hashes are chained in `voxtrail_chain`; `voxtrail verify` checks them (docs/integrity.md).",
          length=64),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
#: Fields only the store sets: a source's value for them is never taken as the field.
STORE_FIELDS = frozenset({"row_hash"})
FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

_POLARS_TYPES: dict[Kind, Any] = {
    "id": pl.Int64,
    "text": pl.Utf8,
    "string": pl.Utf8,
    "int": pl.Int64,
    "float": pl.Float64,
    "timestamp": pl.Datetime("us"),
    "json": pl.Utf8,  # serialised JSON text: every dialect's bulk path takes text
}


def polars_schema(names: Iterable[str] | None = None) -> dict[str, Any]:
    """The polars dtype of each named field (all fields when ``names`` is None)."""
    chosen = FIELD_NAMES if names is None else names
    return {name: _POLARS_TYPES[FIELDS_BY_NAME[name].kind] for name in chosen}


@dataclass(frozen=True)
class Reject:
    """An input that could not become an event: it goes to quarantine, never silently away."""

    offset: int
    reason: str
    excerpt: bytes


@dataclass
class EventBatch:
    """Events in columnar form. ``frame`` columns are event field names; ``ts`` is UTC-naive.

    ``constants`` holds fields whose value is the same for every event of the batch (``source``,
    ``source_file``, ...): they are not repeated in the frame, and bulk writers bind them once.
    """

    frame: pl.DataFrame
    rejects: list[Reject] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.frame.height

    @classmethod
    def empty(cls) -> "EventBatch":
        return cls(pl.DataFrame(schema=polars_schema(["request_id", "ts", "status", "source"])))

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> "EventBatch":
        """Build a batch from event dicts (keys must be field names)."""
        rows = list(records)
        names = [n for n in FIELD_NAMES if any(n in r for r in rows)]
        frame = pl.DataFrame(
            {n: [r.get(n) for r in rows] for n in names}, schema=polars_schema(names), strict=False
        )
        return cls(frame)


def unknown_fields(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in FIELDS_BY_NAME]
