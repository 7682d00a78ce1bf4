"""What differs in the text of a statement between SQLite and PostgreSQL, and nothing more.

Statements shared by both stores (``_statements``) are written once, as templates
with named parameters (``:name``) or positional ones (``?``) and a few ``{fragment}``
slots; a ``Dialect`` renders a template into the statement its driver takes, once
per statement (cached). Its slots:

- the states (``{RUNNING}``, ``{ACTIVE}``, ...), rendered from the domain model's enums:
  the states are written once, in ``_model``. They are rendered as literals, not sent
  as parameters, because the partial indexes of the migrations name them, and a
  planner uses such an index only when the statement states the same predicate
  (SQLite's ``INDEXED BY`` even refuses to run otherwise);
- row locks (``{key_share}``, ``{for_update}``, ``{skip_locked}``): PostgreSQL locks
  rows, SQLite has one writer at a time and needs none;
- parameter types (``{text}``, ``{int}``, ``{real}``): PostgreSQL must know the type of
  a parameter in a select list (a None would otherwise be read as text);
- ``{names_set}``: the list of text in the parameter ``names`` as SQL's ``IN`` takes it
  (``json_each`` of a JSON array on SQLite, ``unnest`` of an array on PostgreSQL; see
  ``Dialect.text_list``), and ``{codes_set}`` the same of the parameter ``codes``;
- ``{in_ids}``: ``IN`` the list of text in the parameter ``ids``, written so that the
  primary key's index looks each one up (``= ANY`` of an array on PostgreSQL: a planner
  given ``IN (SELECT unnest(...))`` may scan the whole table instead); ``{ids_set}``
  the same list as ``{names_set}`` gives it;
  ``{step_order}``: the column that orders a workflow's steps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._model import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    BreakerState,
    StepState,
    WorkflowState,
)


def _literal(*states: str) -> str:
    return ", ".join("'" + str(state) + "'" for state in states)


#: The states, as SQL literals, for ``str.format`` (see the module's docstring).
STATES = {
    "RUNNING": _literal(WorkflowState.RUNNING),
    "PENDING": _literal(WorkflowState.PENDING),
    "ACTIVE": f"({_literal(*ACTIVE_STATES)})",
    "TERMINAL": f"({_literal(*TERMINAL_STATES)})",
    # The step records that a later record at the same position replaces.
    "REPLACEABLE": f"({_literal(StepState.RETRYING, StepState.WAITING)})",
    # What app.resume takes up again, and the step records it removes (they run afresh).
    "RESUMABLE": f"({_literal(WorkflowState.FAILED, WorkflowState.CANCELLED)})",
    "UNDONE": f"({_literal(StepState.FAILED, StepState.CANCELLED, StepState.RETRYING)})",
    "CLOSED": _literal(BreakerState.CLOSED),
    "OPEN": _literal(BreakerState.OPEN),
    "HALF_OPEN": _literal(BreakerState.HALF_OPEN),
}

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Dialect:
    """How one database spells what the shared statements leave open."""

    #: The folder of its migrations under ``storage/sql``.
    name: str
    #: Whether the driver takes psycopg's ``%s``/``%(name)s`` (else ``?``/``:name``).
    pyformat: bool
    #: Whether a statement's row count is known as soon as it ran (SQLite); PostgreSQL's
    #: pipeline knows it only at the commit, so a statement returns a row to say it wrote.
    rowcount_at_once: bool
    fragments: dict[str, str]
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, template: str) -> str:
        """``template`` rendered for this database (computed once per template)."""
        rendered = self._cache.get(template)
        if rendered is None:
            rendered = template.format(**STATES, **self.fragments)
            if self.pyformat:
                rendered = _NAMED.sub(r"%(\1)s", rendered.replace("?", "%s"))
            self._cache[template] = rendered
        return rendered

    def text_list(self, values: Sequence[str]) -> Any:
        """A list of text as the ``{text_set}`` fragment's parameter takes it."""
        return list(values) if self.pyformat else json.dumps(list(values))


SQLITE = Dialect(
    "sqlite",
    pyformat=False,
    rowcount_at_once=True,
    fragments={
        "key_share": "",
        "for_update": "",
        "skip_locked": "",
        "text": "",
        "int": "",
        "real": "",
        "step_order": "rowid",
        "names_set": "(SELECT value FROM json_each(:names))",
        "codes_set": "(SELECT value FROM json_each(:codes))",
        "in_ids": "IN (SELECT value FROM json_each(:ids))",
        "ids_set": "(SELECT value FROM json_each(:ids))",
    },
)

POSTGRES = Dialect(
    "postgres",
    pyformat=True,
    rowcount_at_once=False,
    fragments={
        "key_share": " FOR KEY SHARE",
        "for_update": " FOR UPDATE",
        "skip_locked": " FOR UPDATE SKIP LOCKED",
        "text": "::text",
        "int": "::integer",
        "real": "::double precision",
        "step_order": "seq",
        "names_set": "(SELECT unnest(:names::text[]))",
        "codes_set": "(SELECT unnest(:codes::text[]))",
        "in_ids": "= ANY(:ids::text[])",
        "ids_set": "(SELECT unnest(:ids::text[]))",
    },
)
