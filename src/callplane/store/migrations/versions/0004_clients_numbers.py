"""Clients and IncomingPhoneNumbers (inbound calls and Dial).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callplane.store.schema import bytewise_string

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("sid", sa.String(34), primary_key=True),
        sa.Column("account_sid", sa.String(34), sa.ForeignKey("accounts.sid"), nullable=False),
        sa.Column("date_created", sa.BigInteger, nullable=False),
        sa.Column("date_updated", sa.BigInteger, nullable=False),
        sa.Column("api_version", sa.String(16), nullable=False, server_default="2012-04-24"),
        sa.Column("friendly_name", sa.String(256), nullable=False),
        sa.Column("login", sa.String(64), nullable=False, unique=True),
        sa.Column("realm", sa.String(128), nullable=False),
        sa.Column("ha1_md5", sa.String(32), nullable=False),
        sa.Column("ha1_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False, server_default="1"),
        sa.Column("voice_url", sa.Text, nullable=True),
        sa.Column("voice_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("voice_fallback_url", sa.Text, nullable=True),
        sa.Column("voice_fallback_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("voice_application_sid", sa.String(34), nullable=True),
    )
    op.create_index("ix_clients_account_date", "clients", ["account_sid", "date_created", "sid"])
    op.create_table(
        "incoming_phone_numbers",
        sa.Column("sid", sa.String(34), primary_key=True),
        sa.Column("account_sid", sa.String(34), sa.ForeignKey("accounts.sid"), nullable=False),
        sa.Column("date_created", sa.BigInteger, nullable=False),
        sa.Column("date_updated", sa.BigInteger, nullable=False),
        sa.Column("api_version", sa.String(16), nullable=False, server_default="2012-04-24"),
        sa.Column("friendly_name", bytewise_string(256), nullable=False),
        sa.Column(
            "phone_number",
            bytewise_string(64),
            nullable=False,
            unique=True,
        ),
        sa.Column("voice_url", sa.Text, nullable=True),
        sa.Column("voice_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("voice_fallback_url", sa.Text, nullable=True),
        sa.Column("voice_fallback_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("status_callback", sa.Text, nullable=True),
        sa.Column("status_callback_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("voice_caller_id_lookup", sa.Integer, nullable=False, server_default="0"),
        sa.Column("voice_application_sid", sa.String(34), nullable=True),
        sa.Column("sms_url", sa.Text, nullable=True),
        sa.Column("sms_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("sms_fallback_url", sa.Text, nullable=True),
        sa.Column("sms_fallback_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("sms_application_sid", sa.String(34), nullable=True),
        sa.Column("ussd_url", sa.Text, nullable=True),
        sa.Column("ussd_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("ussd_fallback_url", sa.Text, nullable=True),
        sa.Column("ussd_fallback_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("ussd_application_sid", sa.String(34), nullable=True),
        sa.Column("refer_url", sa.Text, nullable=True),
        sa.Column("refer_method", sa.String(8), nullable=False, server_default="POST"),
        sa.Column("refer_application_sid", sa.String(34), nullable=True),
        sa.Column("voice_capable", sa.Integer, nullable=False, server_default="1"),
        sa.Column("sms_capable", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mms_capable", sa.Integer, nullable=False, server_default="0"),
        sa.Column("fax_capable", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_numbers_account_name", "incoming_phone_numbers", ["account_sid", "friendly_name", "sid"])
    op.create_index("ix_numbers_account_number", "incoming_phone_numbers", ["account_sid", "phone_number", "sid"])


def downgrade() -> None:
    op.drop_table("incoming_phone_numbers")
    op.drop_table("clients")
