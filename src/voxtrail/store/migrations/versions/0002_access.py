"""Users, API tokens and web sessions.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

from voxtrail.store.schema import MYSQL_TABLE_KW, api_token_columns, user_columns, web_session_columns

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voxtrail_users", *user_columns(),
        sa.UniqueConstraint("name", name="ux_voxtrail_users_name"),
        **MYSQL_TABLE_KW,
    )
    op.create_table(
        "voxtrail_api_tokens", *api_token_columns(),
        sa.UniqueConstraint("token_hash", name="ux_voxtrail_api_tokens_hash"),
        **MYSQL_TABLE_KW,
    )
    op.create_table("voxtrail_sessions", *web_session_columns(), **MYSQL_TABLE_KW)
    op.create_index("ix_voxtrail_sessions_user", "voxtrail_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_table("voxtrail_sessions")
    op.drop_table("voxtrail_api_tokens")
    op.drop_table("voxtrail_users")
