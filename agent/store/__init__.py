"""Persistence behind a Protocol: SQLite backend."""
