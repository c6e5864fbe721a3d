"""Persistence: schema, migrations and one query module per resource."""
