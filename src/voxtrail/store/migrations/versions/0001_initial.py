"""Initial schema: tts_events, tts_rejects, import_checkpoints.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

The event columns are listed here, not read from ``event.FIELDS``: a migration must create the
schema as it was at this revision, or adding a Field later would change history. Type helpers
come from schema.py because they only encode per-dialect type choices.
"""

import sqlalchemy as sa
from alembic import op

from voxtrail.store.schema import MYSQL_TABLE_KW, checkpoint_columns, column_type, id_type, reject_columns
from voxtrail.store.schema import timestamp_type, utc_now

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# (name, kind, varchar length, nullable), in the order of event.FIELDS at this revision.
EVENT_FIELDS = (
    ("request_id", "string", 128, False),
    ("ts", "timestamp", None, False),
    ("status", "string", 16, False),
    ("level", "string", 16, True),
    ("emotion", "string", 64, True),
    ("latency_ms", "float", None, True),
    ("text_length", "int", None, True),
    ("user_id", "string", 128, True),
    ("text_input", "text", None, True),
    ("pinyin_input", "text", None, True),
    ("ref_audio_url", "text", None, True),
    ("ref_audio_sha256", "string", 64, True),
    ("emotion_desc", "text", None, True),
    ("emotion_vector", "json", None, True),
    ("emotion_control", "string", 16, True),
    ("emo_alpha", "float", None, True),
    ("target_duration_ratio", "float", None, True),
    ("mode", "string", 16, True),
    ("error_type", "string", 256, True),
    ("error_message", "text", None, True),
    ("output_audio_url", "text", None, True),
    ("output_audio_sha256", "string", 64, True),
    ("audio_length_ms", "float", None, True),
    ("rtf", "float", None, True),
    ("gpt_gen_ms", "float", None, True),
    ("gpt_forward_ms", "float", None, True),
    ("s2mel_ms", "float", None, True),
    ("bigvgan_ms", "float", None, True),
    ("queue_wait_ms", "float", None, True),
    ("node", "string", 128, True),
    ("model", "string", 128, True),
    ("model_version", "string", 64, True),
    ("source", "string", 16, False),
    ("source_format", "string", 16, True),
    ("source_file", "text", None, True),
    ("source_offset", "int", None, True),
    ("attributes", "json", None, True),
)


def upgrade() -> None:
    op.create_table(
        "tts_events",
        sa.Column("id", id_type(), primary_key=True, autoincrement=True),
        *(sa.Column(name, column_type(kind, length), nullable=nullable) for name, kind, length, nullable in EVENT_FIELDS),
        sa.Column("ingested_at", timestamp_type(), nullable=False, server_default=utc_now()),
        **MYSQL_TABLE_KW,
    )
    op.create_index("ux_tts_events_request_id", "tts_events", ["request_id"], unique=True)
    op.create_index("ix_tts_events_ts", "tts_events", ["ts"])
    op.create_table(
        "tts_rejects", *reject_columns(),
        sa.UniqueConstraint("stream_id", "source_offset", name="ux_tts_rejects_stream_offset"),
        **MYSQL_TABLE_KW,
    )
    op.create_table("import_checkpoints", *checkpoint_columns(), **MYSQL_TABLE_KW)


def downgrade() -> None:
    op.drop_table("import_checkpoints")
    op.drop_table("tts_rejects")
    op.drop_table("tts_events")
