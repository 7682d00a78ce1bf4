"""Compliance on a SQL store, the same SQL on both (part of ``SqlStore``): tagging the
data subjects of a workflow, the maintenance lease, deleting finished trees (retention),
erasing a subject's payloads, and rewriting every payload (rekeying).

Each batch is one transaction (``_write``), kept small by the caller's limit, so that it
holds the writer (SQLite) or its row locks (PostgreSQL) only briefly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .._model import ACTIVE_STATES, ERASED, OperatorAction
from . import _statements_compliance as c
from ._limits import check_key
from ._sql_base import SqlBase


def _scrub_resume_details(details: str) -> str | None:
    """A resume action's details with the outcome it replaced erased (None: unchanged)."""
    try:
        decoded = json.loads(details)
    except ValueError:
        return None
    replaced = decoded.get("replaced") if isinstance(decoded, dict) else None
    if not isinstance(replaced, dict):
        return None
    changed = False
    for field in ("output", "error"):
        if replaced.get(field) not in (None, ERASED):
            replaced[field] = ERASED
            changed = True
    return json.dumps(decoded, sort_keys=True) if changed else None


class SqlCompliance(SqlBase):
    """Retention, erasure and rekeying on a SQL store."""

    def _ids(self, ids: Sequence[str]) -> Any:
        return self._dialect.text_list(list(ids))

    def _scrub_resumes(self, conn: Any, ids: Sequence[str]) -> None:
        rows = conn.execute(self._sql(c.RESUME_ACTIONS), {"ids": self._ids(ids)}).fetchall()
        update = self._sql(c.SET_ACTION_DETAILS)
        for seq, details in rows:
            scrubbed = _scrub_resume_details(details)
            if scrubbed is not None:
                conn.execute(update, {"details": scrubbed, "seq": seq})

    # -- data subjects ---------------------------------------------------------------------

    def workflow_subjects(self, workflow_id: str) -> list[str]:
        rows = self._read(self._sql(c.LIST_SUBJECTS), {"id": workflow_id})
        return [row[0] for row in rows]

    # -- the maintenance lease ---------------------------------------------------------------

    def take_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        check_key("lease name", name)
        check_key("lease holder", holder)
        sql = self._sql(c.TAKE_LEASE)
        params = {"name": name, "holder": holder, "now": now, "expires": expires_at}
        return self._write(lambda conn: conn.execute(sql, params).fetchone() is not None)

    # -- retention ---------------------------------------------------------------------------

    def collect_garbage(
        self,
        statuses: Sequence[str],
        finished_before: float,
        limit: int,
        now: float,
        actor: str,
        dry_run: bool = False,
    ) -> list[list[str]]:
        check_key("actor", actor)
        roots_sql, trees_sql = self._sql(c.GC_ROOTS), self._sql(c.TREES)
        lock_sql = self._sql(c.LOCK_WORKFLOWS)
        deletes = [self._sql(statement) for statement in c.DELETE_TREES]
        params = {
            "ids": self._ids([str(status) for status in statuses]),
            "before": finished_before,
            "limit": max(1, limit),
        }

        def collect(conn: Any) -> list[list[str]]:
            roots = [row[0] for row in conn.execute(roots_sql, params).fetchall()]
            if not roots:
                return []
            trees: dict[str, list[str]] = {root: [root] for root in roots}
            for workflow_id, root in conn.execute(trees_sql, {"ids": self._ids(roots)}):
                if workflow_id != root:
                    trees[root].append(workflow_id)
            members = [workflow_id for tree in trees.values() for workflow_id in tree]
            locked = conn.execute(lock_sql, {"ids": self._ids(members)}).fetchall()
            active = {workflow_id for workflow_id, status in locked if status in ACTIVE_STATES}
            # A tree with a workflow still running (a child that outlived its parent, one
            # resumed meanwhile) stays whole, for a later run.
            whole = [tree for tree in trees.values() if not active.intersection(tree)]
            doomed = [workflow_id for tree in whole for workflow_id in tree]
            if dry_run or not doomed:
                return whole
            ids = {"ids": self._ids(doomed)}
            self._scrub_resumes(conn, doomed)
            for statement in deletes:
                conn.execute(statement, ids)
            for tree in whole:
                details = {
                    "deleted": tree,
                    "finished_before": finished_before,
                    "statuses": sorted(str(s) for s in statuses),
                }
                self._log_action(conn, tree[0], OperatorAction.GC, actor, details, now)
            return whole

        return self._write_again_if_raced(collect)

    # -- erasure -----------------------------------------------------------------------------

    def erase_subject(self, subject: str, actor: str, now: float) -> tuple[list[str], list[str]]:
        check_key("data subject", subject)
        check_key("actor", actor)
        find_sql, lock_sql = self._sql(c.SUBJECT_WORKFLOWS), self._sql(c.LOCK_WORKFLOWS)
        erase_sql = [self._sql(statement) for statement in c.ERASE_PAYLOADS]
        mark_sql = self._sql(c.MARK_ERASED)

        def erase(conn: Any) -> tuple[list[str], list[str]]:
            found = [row[0] for row in conn.execute(find_sql, {"subject": subject}).fetchall()]
            if not found:
                return [], []
            locked = conn.execute(lock_sql, {"ids": self._ids(found)}).fetchall()
            active = sorted(wid for wid, status in locked if status in ACTIVE_STATES)
            if active:
                return [], active
            ids = sorted(wid for wid, _ in locked)
            params = {"ids": self._ids(ids), "erased": ERASED}
            for statement in erase_sql:
                conn.execute(statement, params)
            self._scrub_resumes(conn, ids)
            conn.execute(mark_sql, {"subject": subject, "now": now})
            for workflow_id in ids:
                details = {"subject": subject}
                self._log_action(conn, workflow_id, OperatorAction.ERASE, actor, details, now)
            return ids, []

        erased, active = self._write_again_if_raced(erase)
        if erased:
            self._compact()
        return erased, active

    # -- rekeying ----------------------------------------------------------------------------

    def rewrite_payloads(self, rewrite: Callable[[str], str | None], batch: int = 200) -> int:
        changed = 0
        for table, keys, columns in c.PAYLOAD_COLUMNS:
            first_sql = self._sql(c.page_of(table, keys, columns, first=True))
            next_sql = self._sql(c.page_of(table, keys, columns, first=False))
            updates = [self._sql(c.rewrite_of(table, keys, column)) for column in columns]
            after: tuple[Any, ...] | None = None
            while True:
                params: dict[str, Any] = {"limit": max(1, batch)}
                if after is not None:
                    params.update({f"k{n}": value for n, value in enumerate(after)})
                page = _PayloadPage(
                    first_sql if after is None else next_sql, params, len(keys), updates, rewrite
                )
                rows, count = self._write(page.rewrite)
                changed += count
                if len(rows) < params["limit"]:
                    break
                after = tuple(rows[-1][: len(keys)])
        return changed


class _PayloadPage:
    """One page of one table's payloads, rewritten in one transaction."""

    def __init__(
        self,
        sql: str,
        params: dict[str, Any],
        keys: int,
        updates: list[str],
        rewrite: Callable[[str], str | None],
    ) -> None:
        self.sql, self.params, self.keys = sql, params, keys
        self.updates, self.convert = updates, rewrite

    def rewrite(self, conn: Any) -> tuple[list[Any], int]:
        rows: list[Any] = conn.execute(self.sql, self.params).fetchall()
        count = 0
        for row in rows:
            key = {f"k{n}": value for n, value in enumerate(row[: self.keys])}
            for update, old in zip(self.updates, row[self.keys :], strict=True):
                new = None if old is None else self.convert(old)
                if new is not None and new != old:
                    count += conn.execute(update, {**key, "new": new, "old": old}).rowcount
        return rows, count
