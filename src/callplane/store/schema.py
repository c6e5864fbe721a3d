"""Table definitions (SQLAlchemy Core). Migrations in ``store/migrations`` create exactly this schema.

Timestamps are stored as integer microseconds since the Unix epoch (UTC) on every backend: comparisons, sorting
and keyset paging are then plain integer work, identical on SQLite and PostgreSQL, and rows decode without any
date parsing on the hot list path.

``recipient_rev``/``sender_rev`` hold the reversed To/From strings: the Restcomm filter semantics are a suffix
match (``LIKE '%value'``), which becomes an index-friendly prefix range on the reversed column.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.types import TypeEngine


def bytewise_string(length: int) -> TypeEngine[str]:
    """A string compared byte by byte on every backend (PostgreSQL's "C" collation, SQLite's default BINARY).

    Sorting and the prefix ranges of the suffix filters must agree with SQLite; a linguistic collation would not.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("parent_sid", String(34), ForeignKey("accounts.sid"), nullable=True, index=True),
    Column("friendly_name", String(256), nullable=False),
    Column("email_address", String(320), nullable=True, unique=True),
    Column("status", String(16), nullable=False),
    Column("type", String(16), nullable=False, server_default="Full"),
    Column("role", String(32), nullable=False, server_default="Developer"),
    Column("auth_token_hash", String(200), nullable=False),
    Column("date_created", BigInteger, nullable=False),
    Column("date_updated", BigInteger, nullable=False),
)

calls = Table(
    "calls",
    metadata,
    Column("sid", String(200), primary_key=True),
    Column("instance_id", String(34), nullable=False),
    Column("parent_call_sid", String(200), nullable=True),
    Column("account_sid", String(34), ForeignKey("accounts.sid"), nullable=False),
    Column("date_created", BigInteger, nullable=False),
    Column("date_updated", BigInteger, nullable=False),
    Column("recipient", bytewise_string(256), nullable=False),
    Column("sender", bytewise_string(256), nullable=False),
    Column("recipient_rev", bytewise_string(256), nullable=False),
    Column("sender_rev", bytewise_string(256), nullable=False),
    Column("phone_number_sid", String(34), nullable=True),
    Column("status", String(16), nullable=False),
    Column("start_time", BigInteger, nullable=True),
    Column("end_time", BigInteger, nullable=True),
    Column("duration", Integer, nullable=False, server_default="0"),
    Column("ring_duration", Integer, nullable=True),
    Column("direction", String(16), nullable=False),
    Column("answered_by", String(64), nullable=True),
    Column("api_version", String(16), nullable=False, server_default="2012-04-24"),
    Column("forwarded_from", String(256), nullable=True),
    Column("caller_name", String(256), nullable=True),
    Column("conference_sid", String(64), nullable=True),
    # Every list query is scoped by account and ordered by (key, date_created, sid) in one direction, so each
    # sortable key gets one composite index that serves both the ORDER BY and the AfterSid keyset predicate.
    Index("ix_calls_account_date", "account_sid", "date_created", "sid"),
    Index("ix_calls_account_sender", "account_sid", "sender", "date_created", "sid"),
    Index("ix_calls_account_recipient", "account_sid", "recipient", "date_created", "sid"),
    Index("ix_calls_account_direction", "account_sid", "direction", "date_created", "sid"),
    Index("ix_calls_account_status", "account_sid", "status", "date_created", "sid"),
    Index("ix_calls_account_duration", "account_sid", "duration", "date_created", "sid"),
    Index("ix_calls_account_sender_rev", "account_sid", "sender_rev"),
    Index("ix_calls_account_recipient_rev", "account_sid", "recipient_rev"),
    Index("ix_calls_parent", "parent_call_sid"),
    Index("ix_calls_instance_status", "instance_id", "status"),
)

registrations = Table(
    "registrations",
    metadata,
    Column("aor", String(256), primary_key=True),
    Column("contact", Text, primary_key=True),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("call_id", String(256), nullable=False),
    Column("cseq", Integer, nullable=False),
    Column("source", String(128), nullable=False, server_default=""),
    Column("transport", String(8), nullable=False, server_default="udp"),
    Column("user_agent", String(256), nullable=False, server_default=""),
    Column("instance_id", String(34), nullable=False, server_default=""),
    # The account that owns the registering Client; empty for Clients configured outside any account.
    Column("account_sid", String(34), nullable=False, server_default=""),
    Index("ix_registrations_account_aor", "account_sid", "aor"),
)

settings_kv = Table(
    "node_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("account_sid", String(34), ForeignKey("accounts.sid"), nullable=False),
    Column("call_sid", String(200), nullable=True),
    Column("date_created", BigInteger, nullable=False),
    Column("api_version", String(16), nullable=False, server_default="2012-04-24"),
    Column("log", Integer, nullable=False),  # 0 error, 1 warning (Restcomm)
    Column("error_code", Integer, nullable=False),
    Column("more_info", Text, nullable=False, server_default=""),
    Column("message_text", Text, nullable=False),
    Column("request_url", Text, nullable=False, server_default=""),
    Column("request_method", String(8), nullable=False, server_default=""),
    Column("request_variables", Text, nullable=False, server_default=""),
    Column("response_headers", Text, nullable=False, server_default=""),
    Column("response_body", Text, nullable=False, server_default=""),
    Index("ix_notifications_account_date", "account_sid", "date_created", "sid"),
    Index("ix_notifications_call", "call_sid", "date_created"),
)

recordings = Table(
    "recordings",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("account_sid", String(34), ForeignKey("accounts.sid"), nullable=False),
    Column("call_sid", String(200), nullable=False),
    Column("date_created", BigInteger, nullable=False),
    Column("duration", BigInteger, nullable=False),  # milliseconds
    Column("api_version", String(16), nullable=False, server_default="2012-04-24"),
    Column("file", String(256), nullable=False),  # relative to DATA/recordings
    Index("ix_recordings_account_date", "account_sid", "date_created", "sid"),
    Index("ix_recordings_call", "call_sid", "date_created"),
)

# Status callbacks waiting for delivery (webhooks.outbox): rows of one call leave in id order.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("instance_id", String(34), nullable=False),
    Column("call_sid", String(200), nullable=False),
    Column("account_sid", String(34), nullable=False),
    Column("url", Text, nullable=False),
    Column("method", String(8), nullable=False),
    Column("params", Text, nullable=False),  # JSON list of [name, value] pairs
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_at", BigInteger, nullable=False),  # epoch microseconds
    Column("date_created", BigInteger, nullable=False),
    Index("ix_outbox_call", "call_sid", "id"),
    Index("ix_outbox_instance_due", "instance_id", "next_at"),
)

# Where a live call's status callbacks go, kept until its final record is written: after a crash, the start-up
# fix-up sends the `completed` callback of every call that was cut off.
call_callbacks = Table(
    "call_callbacks",
    metadata,
    Column("call_sid", String(200), primary_key=True),
    Column("instance_id", String(34), nullable=False, index=True),
    Column("account_sid", String(34), nullable=False),
    Column("url", Text, nullable=False),
    Column("method", String(8), nullable=False),
    Column("events", String(64), nullable=False),  # comma-separated
    Column("api_version", String(16), nullable=False, server_default="2012-04-24"),
)

# SIP Clients (restcomm-behaviour §6): the registrar authenticates against them and `client:` / <Dial><Client>
# ring their registrations. A login is unique on the whole node cluster (the registrar has one realm and a REGISTER
# names only the login). The password is never stored: only the RFC 7616 HA1 digests, H(login:realm:password).
clients = Table(
    "clients",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("account_sid", String(34), ForeignKey("accounts.sid"), nullable=False),
    Column("date_created", BigInteger, nullable=False),
    Column("date_updated", BigInteger, nullable=False),
    Column("api_version", String(16), nullable=False, server_default="2012-04-24"),
    Column("friendly_name", String(256), nullable=False),
    Column("login", String(64), nullable=False, unique=True),
    Column("realm", String(128), nullable=False),  # the realm the HA1s were computed for
    Column("ha1_md5", String(32), nullable=False),
    Column("ha1_sha256", String(64), nullable=False),
    Column("status", Integer, nullable=False, server_default="1"),  # 1 enabled, 0 disabled
    Column("voice_url", Text, nullable=True),
    Column("voice_method", String(8), nullable=False, server_default="POST"),
    Column("voice_fallback_url", Text, nullable=True),
    Column("voice_fallback_method", String(8), nullable=False, server_default="POST"),
    Column("voice_application_sid", String(34), nullable=True),
    Index("ix_clients_account_date", "account_sid", "date_created", "sid"),
)

# IncomingPhoneNumbers (restcomm-behaviour §6): numbers the trunk delivers to us, in E.164, unique on the cluster.
incoming_phone_numbers = Table(
    "incoming_phone_numbers",
    metadata,
    Column("sid", String(34), primary_key=True),
    Column("account_sid", String(34), ForeignKey("accounts.sid"), nullable=False),
    Column("date_created", BigInteger, nullable=False),
    Column("date_updated", BigInteger, nullable=False),
    Column("api_version", String(16), nullable=False, server_default="2012-04-24"),
    Column("friendly_name", bytewise_string(256), nullable=False),
    Column("phone_number", bytewise_string(64), nullable=False, unique=True),
    Column("voice_url", Text, nullable=True),
    Column("voice_method", String(8), nullable=False, server_default="POST"),
    Column("voice_fallback_url", Text, nullable=True),
    Column("voice_fallback_method", String(8), nullable=False, server_default="POST"),
    Column("status_callback", Text, nullable=True),
    Column("status_callback_method", String(8), nullable=False, server_default="POST"),
    Column("voice_caller_id_lookup", Integer, nullable=False, server_default="0"),
    Column("voice_application_sid", String(34), nullable=True),
    Column("sms_url", Text, nullable=True),
    Column("sms_method", String(8), nullable=False, server_default="POST"),
    Column("sms_fallback_url", Text, nullable=True),
    Column("sms_fallback_method", String(8), nullable=False, server_default="POST"),
    Column("sms_application_sid", String(34), nullable=True),
    Column("ussd_url", Text, nullable=True),
    Column("ussd_method", String(8), nullable=False, server_default="POST"),
    Column("ussd_fallback_url", Text, nullable=True),
    Column("ussd_fallback_method", String(8), nullable=False, server_default="POST"),
    Column("ussd_application_sid", String(34), nullable=True),
    Column("refer_url", Text, nullable=True),
    Column("refer_method", String(8), nullable=False, server_default="POST"),
    Column("refer_application_sid", String(34), nullable=True),
    Column("voice_capable", Integer, nullable=False, server_default="1"),
    Column("sms_capable", Integer, nullable=False, server_default="0"),
    Column("mms_capable", Integer, nullable=False, server_default="0"),
    Column("fax_capable", Integer, nullable=False, server_default="0"),
    Index("ix_numbers_account_number", "account_sid", "phone_number", "sid"),
    Index("ix_numbers_account_name", "account_sid", "friendly_name", "sid"),
)
