"""Rollups: hourly and daily cubes, latency histograms, top errors; backfilled from stored events.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

from voxtrail.store import rollups
from voxtrail.store.schema import MYSQL_TABLE_KW, ROLLUP_KEY_ORDER, ROLLUP_TABLE_KW, ROLLUP_TABLES, rollup_table_columns, timestamp_type

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, spec in ROLLUP_TABLES.items():
        op.create_table(name, *rollup_table_columns(*spec, ROLLUP_KEY_ORDER.get(name)), **ROLLUP_TABLE_KW)
    state = op.create_table(
        "voxtrail_rollup_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("rebuilt_at", timestamp_type()),
        **MYSQL_TABLE_KW,
    )
    op.bulk_insert(state, [{"id": 1, "rebuilt_at": None}])
    # Events stored before this revision: rolled up here, in the migration's transaction (on a
    # large database `voxtrail rollup rebuild` does the same in batches, with progress).
    bind = op.get_bind()
    dialect = "mysql" if bind.dialect.name in ("mysql", "mariadb") else bind.dialect.name
    rollups.add_events(bind, dialect, sa.true())


def downgrade() -> None:
    op.drop_table("voxtrail_rollup_state")
    for name in reversed(list(ROLLUP_TABLES)):
        op.drop_table(name)
