"""Encryption at rest (issue 14): ``EncryptingSerializer`` seals every payload with
AES-256-GCM under key IDs; ``app.rekey()`` / ``perdure rekey`` rotate; both stores, the
database read raw (SQLite: the file's and WAL's bytes)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from compliance_helpers import TABLES, define_everything, raw_dump, raw_rows

import perdure
from perdure._cli import cli

SECRET = "s3cret-4711"


def test_no_payload_is_stored_in_clear_and_keys_rotate(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    k1, k2 = perdure.generate_key(), perdure.generate_key()
    old = perdure.EncryptingSerializer(keys={"k1": k1}, current="k1")
    app = make_app(serializer=old)
    everything = define_everything(app, SECRET)
    with app:
        handle = app.options(workflow_id="w").start(everything, SECRET)
        perdure_wait_event(app, "w")
        app.send("w", f"reply to {SECRET}", topic="reply", actor="ops")
        result = handle.result(timeout=30)
    assert result == f"record of {SECRET} / child saw {SECRET} / reply to {SECRET}"
    dump = raw_dump(database_url)
    assert SECRET not in dump and "first attempt failed" not in dump
    assert "pdx1:k1:" in dump
    # A failed workflow's error is sealed too, and read back.
    failing = make_app(serializer=old)

    @failing.workflow(name="fails")
    def fails(who: str) -> None:
        raise RuntimeError(f"no luck for {who}")

    with failing, pytest.raises(RuntimeError, match=f"no luck for {SECRET}"):
        failing.options(workflow_id="f").run(fails, SECRET)
    assert SECRET not in raw_dump(database_url)

    # Rotation: k2 is current, k1 still decrypts; rekey seals every old value under k2.
    rotated = make_app(
        serializer=perdure.EncryptingSerializer(keys={"k2": k2, "k1": k1}, current="k2")
    )
    define_everything(rotated, SECRET)
    assert rotated.retrieve("w").result(timeout=5) == result
    only_new = perdure.EncryptingSerializer(keys={"k2": k2}, current="k2")
    reader = make_app(serializer=only_new)
    define_everything(reader, SECRET)
    with pytest.raises(perdure.SerializationError, match="key 'k1'"):
        reader.retrieve("w").result(timeout=5)
    assert rotated.rekey(batch=3, actor="ops") > 10
    # Every table read raw: no value is left under k1 (the file's free pages may still
    # hold old ciphertext until SQLite reuses them; they are not readable without k1).
    tables = repr([raw_rows(database_url, table) for table in TABLES])
    assert "pdx1:k1:" not in tables and "pdx1:k2:" in tables and SECRET not in tables
    assert rotated.rekey(actor="ops") == 0  # nothing left under k1
    assert reader.retrieve("w").result(timeout=5) == result
    with pytest.raises(RuntimeError, match=f"no luck for {SECRET}"):
        reader.retrieve("f").result(timeout=5)
    first, second = reader.audit_log(action="rekey")
    assert first.actor == "ops" and first.details["current_key"] == "k2"
    assert second.details["rewritten"] == 0


def perdure_wait_event(app: perdure.App, workflow_id: str) -> None:
    assert app.get_event(workflow_id, "profile", timeout=30) == {"who": SECRET}


def test_keys_are_checked_and_never_shown() -> None:
    key = perdure.generate_key()
    serializer = perdure.EncryptingSerializer(keys={"k1": key}, current="k1")
    assert key.hex() not in repr(serializer) and "k1" in repr(serializer)
    sealed = serializer.dumps({"a": 1})
    assert sealed.startswith("pdx1:k1:") and serializer.loads(sealed) == {"a": 1}
    assert serializer.dumps({"a": 1}) != sealed  # a fresh nonce each time
    # Nonces come from a buffer of the OS's random bytes: none repeats, across refills.
    nonces = {base64.b64decode(serializer.dumps(1).split(":")[2])[:12] for _ in range(600)}
    assert len(nonces) == 600
    assert serializer.loads('{"a": 2}') == {"a": 2}  # stored before encryption: readable
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(perdure.SerializationError, match="altered"):
        serializer.loads(tampered)
    with pytest.raises(perdure.ConfigurationError, match="32 bytes"):
        perdure.EncryptingSerializer(keys={"k1": b"short"}, current="k1")
    with pytest.raises(perdure.ConfigurationError, match="not among the keys"):
        perdure.EncryptingSerializer(keys={"k1": key}, current="k2")
    with pytest.raises(perdure.ConfigurationError, match="key ID"):
        perdure.EncryptingSerializer(keys={"k:1": key}, current="k:1")


def test_rekey_needs_an_encrypting_app(database_url: str) -> None:
    app = perdure.App(database_url)
    try:
        with pytest.raises(perdure.ConfigurationError, match="EncryptingSerializer"):
            app.rekey()
    finally:
        app.shutdown()
    result = CliRunner().invoke(cli, ["rekey", "--database-url", database_url])
    assert result.exit_code != 0 and "--app" in result.output


def test_encryption_can_be_turned_on_under_running_workflows(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    def greets(name: str, times: int, extra: dict[str, int]) -> str:
        message = perdure.recv(timeout=60)
        return f"{name} x{times} {extra} {message}"

    plain = make_app()
    started = plain.workflow(name="greets")(greets)
    with plain:
        handle = plain.options(workflow_id="g").start(started, "ann", 2, {"a": 1})
        deadline = time.monotonic() + 30
        while handle.status().wake_at is None:  # suspended on its recv
            assert time.monotonic() < deadline, "not suspended"
            time.sleep(0.05)
    key = perdure.generate_key()
    sealed = make_app(serializer=perdure.EncryptingSerializer(keys={"k": key}, current="k"))
    sealed.workflow(name="greets")(greets)
    with sealed:
        sealed.send("g", "hi")
        # Its inputs were recorded in clear, its message sealed: both read back.
        assert sealed.retrieve("g").result(timeout=30) == "ann x2 {'a': 1} hi"
