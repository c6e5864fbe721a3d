"""Registrations belong to the Client's account.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(sa.Column("account_sid", sa.String(34), nullable=False, server_default=""))
    op.create_index("ix_registrations_account_aor", "registrations", ["account_sid", "aor"])


def downgrade() -> None:
    op.drop_index("ix_registrations_account_aor", "registrations")
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("account_sid")
