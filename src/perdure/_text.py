"""Text that perdure shows to people: database URLs without their passwords, and values
from the database escaped so that they cannot drive the terminal they are printed to.

Workflow IDs, names, notes and error messages come from callers and from the database;
printed raw, a newline in an ID forges a row of ``perdure list`` and an escape sequence
recolours (or retitles, or worse) the reader's terminal.
"""

from __future__ import annotations

import re

#: What replaces a password.
REDACTED = "***"

# Query options and conninfo keywords whose value is a secret (libpq's ``password`` and
# ``sslpassword``, and the like in other tools' URLs).
_SECRET_OPTION = re.compile(
    r"""(?ix)
    (?P<key>\b[\w.-]*(?:password|passwd|pwd|secret|token)[\w.-]*)
    (?P<eq>\s*=\s*)
    (?P<value>'(?:[^'\\]|\\.)*'?|[^&;\s#]*)
    """
)

# Escapes for the controls that have a short, familiar spelling.
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: the one in ``user:password@`` and any
    ``password=`` (or ``sslpassword=``, ``token=``...) option, also in a libpq
    ``key=value`` string. Anything else is kept, so the URL still says which database."""
    text = str(url)
    scheme_end = text.find("://")
    if scheme_end >= 0:
        start = scheme_end + 3
        # The user information ends at the last "@" before the query: a password may
        # hold an unencoded "@" or "/", which must not leave its tail in view.
        query_at = min(
            (i for i in (text.find("?", start), text.find("#", start)) if i >= 0), default=len(text)
        )
        at = text.rfind("@", start, query_at)
        if at >= 0:
            colon = text.find(":", start, at)
            if colon >= 0:
                text = f"{text[: colon + 1]}{REDACTED}{text[at:]}"
    return _SECRET_OPTION.sub(lambda m: f"{m['key']}{m['eq']}{REDACTED}", text)


def escape_for_terminal(text: object) -> str:
    """``text`` on one line, safe to print: control characters (newlines, escape
    sequences, C1 controls), lone surrogates and characters that reorder the text around
    them (bidirectional overrides, line separators) are written as Python escapes
    (``\\n``, ``\\x1b``, ``\\u202e``); the rest is kept as is, non-ASCII letters included."""
    value = str(text)
    if value.isprintable():
        return value  # the common case, checked in C
    return "".join(_escape_char(char) for char in value)


def _escape_char(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    # isprintable() is False for controls (C0, DEL, C1), format characters (the
    # bidirectional overrides of "Trojan Source" among them), surrogates, unassigned
    # code points and separators other than the space: what a terminal may act on.
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was when cut."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}...{text[-10:]} ({len(text)} characters)"
