"""Trust: row hashes and the chain of write links, retention gaps, settings state, access log.

Revision ID: 0004
Revises: 0003

Events stored before this revision carry no row_hash: the chain starts after them, and
``voxtrail verify`` reports them as written before the chain began (the genesis link says up to
which id).
"""

from alembic import op
import sqlalchemy as sa

from voxtrail.store.schema import (
    MYSQL_TABLE_KW,
    access_log_columns,
    chain_gap_columns,
    chain_link_columns,
    state_columns,
)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite can only add AUTOINCREMENT by rebuilding the table (rows keep their ids, and
        # sqlite_sequence starts above the largest): ids must never be reused after a purge.
        with op.batch_alter_table("tts_events", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}) as batch:
            batch.add_column(sa.Column("row_hash", sa.String(64)))
    else:
        op.add_column("tts_events", sa.Column("row_hash", sa.String(64)))
    op.create_table("voxtrail_chain", *chain_link_columns(), **MYSQL_TABLE_KW)
    op.create_index("ix_voxtrail_chain_first_id", "voxtrail_chain", ["first_id"])
    op.create_table("voxtrail_chain_gaps", *chain_gap_columns(), **MYSQL_TABLE_KW)
    op.create_index("ix_voxtrail_chain_gaps_link", "voxtrail_chain_gaps", ["link_seq", "first_id"])
    op.create_table("voxtrail_state", *state_columns(), **MYSQL_TABLE_KW)
    op.create_table("voxtrail_access_log", *access_log_columns(), **MYSQL_TABLE_KW)
    op.create_index("ix_voxtrail_access_log_at", "voxtrail_access_log", ["at"])
    from voxtrail.store import chain

    chain.genesis(op.get_bind())


def downgrade() -> None:
    op.drop_table("voxtrail_access_log")
    op.drop_table("voxtrail_state")
    op.drop_table("voxtrail_chain_gaps")
    op.drop_table("voxtrail_chain")
    op.drop_column("tts_events", "row_hash")
