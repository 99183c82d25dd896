"""Alembic migrations of the answer and feedback store, run by `records.Store.migrate`."""
