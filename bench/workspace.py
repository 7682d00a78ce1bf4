"""A store's workspace (fresh databases, the floor commit, the server's epoch), whichever
the store."""

from __future__ import annotations

from bench.store_postgres import PostgresWorkspace
from bench.store_sqlite import SQLiteWorkspace

Workspace = SQLiteWorkspace | PostgresWorkspace


__all__ = ["PostgresWorkspace", "SQLiteWorkspace", "Workspace"]
