"""Alembic's entry point: runs on the connection `records.Store.migrate` hands over."""

from alembic import context

from service.usage.records import migrate_connection

migrate_connection(context.config.attributes["connection"])
