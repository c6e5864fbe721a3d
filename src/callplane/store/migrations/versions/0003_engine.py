"""Notifications, recordings and the status-callback outbox (the call engine's tables).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("sid", sa.String(34), primary_key=True),
        sa.Column("account_sid", sa.String(34), sa.ForeignKey("accounts.sid"), nullable=False),
        sa.Column("call_sid", sa.String(200), nullable=True),
        sa.Column("date_created", sa.BigInteger, nullable=False),
        sa.Column("api_version", sa.String(16), nullable=False, server_default="2012-04-24"),
        sa.Column("log", sa.Integer, nullable=False),
        sa.Column("error_code", sa.Integer, nullable=False),
        sa.Column("more_info", sa.Text, nullable=False, server_default=""),
        sa.Column("message_text", sa.Text, nullable=False),
        sa.Column("request_url", sa.Text, nullable=False, server_default=""),
        sa.Column("request_method", sa.String(8), nullable=False, server_default=""),
        sa.Column("request_variables", sa.Text, nullable=False, server_default=""),
        sa.Column("response_headers", sa.Text, nullable=False, server_default=""),
        sa.Column("response_body", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_notifications_account_date", "notifications", ["account_sid", "date_created", "sid"])
    op.create_index("ix_notifications_call", "notifications", ["call_sid", "date_created"])
    op.create_table(
        "recordings",
        sa.Column("sid", sa.String(34), primary_key=True),
        sa.Column("account_sid", sa.String(34), sa.ForeignKey("accounts.sid"), nullable=False),
        sa.Column("call_sid", sa.String(200), nullable=False),
        sa.Column("date_created", sa.BigInteger, nullable=False),
        sa.Column("duration", sa.BigInteger, nullable=False),
        sa.Column("api_version", sa.String(16), nullable=False, server_default="2012-04-24"),
        sa.Column("file", sa.String(256), nullable=False),
    )
    op.create_index("ix_recordings_account_date", "recordings", ["account_sid", "date_created", "sid"])
    op.create_index("ix_recordings_call", "recordings", ["call_sid", "date_created"])
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(34), nullable=False),
        sa.Column("call_sid", sa.String(200), nullable=False),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.BigInteger, nullable=False),
        sa.Column("date_created", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_outbox_call", "webhook_outbox", ["call_sid", "id"])
    op.create_index("ix_outbox_instance_due", "webhook_outbox", ["instance_id", "next_at"])
    op.create_table(
        "call_callbacks",
        sa.Column("call_sid", sa.String(200), primary_key=True),
        sa.Column("instance_id", sa.String(34), nullable=False),
        sa.Column("account_sid", sa.String(34), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("events", sa.String(64), nullable=False),
        sa.Column("api_version", sa.String(16), nullable=False, server_default="2012-04-24"),
    )
    op.create_index("ix_call_callbacks_instance_id", "call_callbacks", ["instance_id"])


def downgrade() -> None:
    op.drop_table("call_callbacks")
    op.drop_table("webhook_outbox")
    op.drop_table("recordings")
    op.drop_table("notifications")
