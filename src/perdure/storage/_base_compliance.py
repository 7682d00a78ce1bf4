"""The compliance part of the storage interface (``Store`` inherits it): tagging data
subjects, the maintenance lease, deleting finished trees, erasing a subject, rewriting
every payload. Each method states what it does atomically and what it returns, like the
rest of ``Store`` (``_base``)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence


class ComplianceOperations(abc.ABC):
    """Retention, erasure and rekeying: operations of every ``Store``."""

    @abc.abstractmethod
    def workflow_subjects(self, workflow_id: str) -> list[str]:
        """The data subjects the workflow was tagged with at its start (``NewWorkflow.subjects``,
        written by ``create_workflow`` in the same transaction), sorted."""

    @abc.abstractmethod
    def take_lease(self, name: str, holder: str, now: float, expires_at: float) -> bool:
        """Take or renew the maintenance lease ``name`` for ``holder`` until ``expires_at``:
        succeeds when nobody holds it, its holder's lease expired before ``now``, or
        ``holder`` holds it already; one statement. At most one holder at any time, across
        every process."""

    @abc.abstractmethod
    def collect_garbage(
        self,
        statuses: Sequence[str],
        finished_before: float,
        limit: int,
        now: float,
        actor: str,
        dry_run: bool = False,
    ) -> list[list[str]]:
        """Delete up to ``limit`` whole finished trees, in one transaction: a root workflow
        (no parent) of one of ``statuses`` that finished before ``finished_before``, oldest
        first, with all its descendants, but only when no workflow of the tree is active
        (such a tree stays whole, for a later call). Each deleted workflow takes its steps,
        messages, events and subject tags with it; the actions log keeps its rows (a resume's
        copy of the outcome it replaced becomes ``ERASED``) and gains a ``gc`` action per
        tree. Returns the trees, each root first; with ``dry_run`` the same trees, deleting
        nothing. The workflows are locked while checked: a concurrent resume either
        commits first (and its tree stays) or finds the workflow gone."""

    @abc.abstractmethod
    def erase_subject(self, subject: str, actor: str, now: float) -> tuple[list[str], list[str]]:
        """Replace every stored payload of the workflows tagged with ``subject``, of their
        descendants and of their forks with ``ERASED``, in one transaction: inputs, output
        and error of each workflow, the output and error of each step, the payload of each
        message it received, the value of each event it set, and a resume's copy of an
        outcome in the actions log. Structure (IDs, names, statuses, positions, topics,
        keys) and times stay. The tags get ``erased_at``; an ``erase`` action is logged per
        workflow. Returns ``(erased, [])``; ``([], active)`` changing nothing when some of
        those workflows are active (PENDING or RUNNING); ``([], [])`` when none is tagged.
        On SQLite the file is then rewritten (``VACUUM``) and its WAL emptied, so that no
        old copy of a replaced value is left in the file's free space."""

    @abc.abstractmethod
    def rewrite_payloads(self, rewrite: Callable[[str], str | None], batch: int = 200) -> int:
        """Pass every stored payload (workflows' inputs, outputs and errors, steps' outputs
        and errors, messages, events, the actions log's details) through ``rewrite`` and
        store what it returns instead (None: unchanged), ``batch`` rows per transaction,
        by primary key. A value changed by someone else since it was read is left as it is
        (each update checks the old value). Returns how many values were rewritten."""
