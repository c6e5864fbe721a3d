"""Accounts, call records, SIP registrations and node settings.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callplane.store.schema import bytewise_string

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("sid", sa.String(34), primary_key=True),
        sa.Column("parent_sid", sa.String(34), sa.ForeignKey("accounts.sid"), nullable=True),
        sa.Column("friendly_name", sa.String(256), nullable=False),
        sa.Column("email_address", sa.String(320), nullable=True, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("type", sa.String(16), nullable=False, server_default="Full"),
        sa.Column("role", sa.String(32), nullable=False, server_default="Developer"),
        sa.Column("auth_token_hash", sa.String(200), nullable=False),
        sa.Column("date_created", sa.BigInteger, nullable=False),
        sa.Column("date_updated", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_accounts_parent_sid", "accounts", ["parent_sid"])
    op.create_table(
        "calls",
        sa.Column("sid", sa.String(200), primary_key=True),
        sa.Column("instance_id", sa.String(34), nullable=False),
        sa.Column("parent_call_sid", sa.String(200), nullable=True),
        sa.Column("account_sid", sa.String(34), sa.ForeignKey("accounts.sid"), nullable=False),
        sa.Column("date_created", sa.BigInteger, nullable=False),
        sa.Column("date_updated", sa.BigInteger, nullable=False),
        sa.Column("recipient", bytewise_string(256), nullable=False),
        sa.Column("sender", bytewise_string(256), nullable=False),
        sa.Column("recipient_rev", bytewise_string(256), nullable=False),
        sa.Column("sender_rev", bytewise_string(256), nullable=False),
        sa.Column("phone_number_sid", sa.String(34), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", sa.BigInteger, nullable=True),
        sa.Column("end_time", sa.BigInteger, nullable=True),
        sa.Column("duration", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ring_duration", sa.Integer, nullable=True),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("answered_by", sa.String(64), nullable=True),
        sa.Column("api_version", sa.String(16), nullable=False, server_default="2012-04-24"),
        sa.Column("forwarded_from", sa.String(256), nullable=True),
        sa.Column("caller_name", sa.String(256), nullable=True),
        sa.Column("conference_sid", sa.String(64), nullable=True),
    )
    for name, cols in [
        ("ix_calls_account_date", ["account_sid", "date_created", "sid"]),
        ("ix_calls_account_sender", ["account_sid", "sender", "date_created", "sid"]),
        ("ix_calls_account_recipient", ["account_sid", "recipient", "date_created", "sid"]),
        ("ix_calls_account_direction", ["account_sid", "direction", "date_created", "sid"]),
        ("ix_calls_account_status", ["account_sid", "status", "date_created", "sid"]),
        ("ix_calls_account_duration", ["account_sid", "duration", "date_created", "sid"]),
        ("ix_calls_account_sender_rev", ["account_sid", "sender_rev"]),
        ("ix_calls_account_recipient_rev", ["account_sid", "recipient_rev"]),
        ("ix_calls_parent", ["parent_call_sid"]),
        ("ix_calls_instance_status", ["instance_id", "status"]),
    ]:
        op.create_index(name, "calls", cols)
    op.create_table(
        "registrations",
        sa.Column("aor", sa.String(256), primary_key=True),
        sa.Column("contact", sa.Text, primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("call_id", sa.String(256), nullable=False),
        sa.Column("cseq", sa.Integer, nullable=False),
        sa.Column("source", sa.String(128), nullable=False, server_default=""),
        sa.Column("transport", sa.String(8), nullable=False, server_default="udp"),
        sa.Column("user_agent", sa.String(256), nullable=False, server_default=""),
        sa.Column("instance_id", sa.String(34), nullable=False, server_default=""),
    )
    op.create_index("ix_registrations_expires_at", "registrations", ["expires_at"])
    op.create_table(
        "node_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_settings")
    op.drop_table("registrations")
    op.drop_table("calls")
    op.drop_table("accounts")
