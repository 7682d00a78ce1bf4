"""Encryption at rest: ``EncryptingSerializer`` seals every payload perdure stores with
AES-256-GCM (the ``cryptography`` library, ``pip install 'perdure[crypto]'``).

A sealed value is text: ``pdx1:<key id>:<base64 of nonce + ciphertext + tag>``. The key
ID travels with it, so that any listed key decrypts what it sealed while new writes use
the current key; ``app.rekey()`` (``perdure rekey``) seals old values again under the
current key (``reseal``), after which an old key can be dropped. The prefix and key ID
are bound to the ciphertext as associated data: a value cannot be passed off as sealed
under another key.

Values are sealed by ``dumps``; recorded errors (``encode_error``) by ``seal``, which
``_serialization`` calls on any serializer that has it. Text without the prefix reads
as plain text: values stored before encryption was turned on stay readable (and in
clear, until the workflow holding them is deleted or erased).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any

from ._entropy import random_bytes
from ._errors import ConfigurationError, SerializationError
from ._serialization import SEALED, JSONSerializer, Serializer

#: What every sealed value starts with (its format's version).
PREFIX = SEALED
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: A sealed value, wherever it stands in a text (inside recorded call arguments, or an
#: outcome delivered to a parent): base64 has no quote, colon or space to end it early.
TOKEN = re.compile(r"pdx1:([A-Za-z0-9_.-]{1,64}):([A-Za-z0-9+/]+={0,2})")
_NONCE = 12


def generate_key() -> bytes:
    """A new random 256-bit key (keep it in a secret store, never in the database)."""
    return os.urandom(32)


class EncryptingSerializer:
    """A serializer that encrypts: ``inner`` (``JSONSerializer`` by default) encodes a
    value, then AES-256-GCM seals the text under the key ``current``.

    ``EncryptingSerializer(keys={"k2": key2, "k1": key1}, current="k2")``: each key is 32
    bytes (``perdure.generate_key()``); every listed key decrypts the values sealed under
    it. To rotate: add the new key, make it current, deploy, run ``perdure rekey``, then
    drop the old key. Key IDs are letters, digits, ``_``, ``.`` and ``-``.
    """

    def __init__(
        self, keys: Mapping[str, bytes], current: str, inner: Serializer | None = None
    ) -> None:
        # Imported here, by the one class that uses it: an optional extra
        # (perdure[crypto]), and a cost at every start of a process that does not encrypt.
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise ConfigurationError(
                "EncryptingSerializer needs the cryptography library: pip install 'perdure[crypto]'"
            ) from None
        self._invalid_tag: type[Exception] = InvalidTag
        if not keys:
            raise ConfigurationError("EncryptingSerializer needs at least one key")
        self._ciphers: dict[str, Any] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ConfigurationError(
                    f"key ID {key_id!r} is not valid: use 1 to 64 letters, digits, '_', '.' or '-'"
                )
            if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
                raise ConfigurationError(
                    f"key {key_id!r} must be 32 bytes (AES-256; perdure.generate_key() "
                    "makes one), not "
                    + (
                        f"{len(key)} bytes"
                        if isinstance(key, (bytes, bytearray))
                        else "a " + type(key).__name__
                    )
                )
            self._ciphers[key_id] = AESGCM(bytes(key))
        if current not in self._ciphers:
            raise ConfigurationError(
                f"the current key {current!r} is not among the keys "
                f"({', '.join(sorted(self._ciphers))})"
            )
        self.current = current
        self.inner: Serializer = inner if inner is not None else JSONSerializer()
        #: Recorded on each workflow (which serializer wrote its values).
        self.name = f"aes256gcm+{self.inner.name}"

    def __repr__(self) -> str:
        # Key IDs only: the keys themselves never appear in a repr, a log or an error.
        return f"EncryptingSerializer(keys={sorted(self._ciphers)}, current={self.current!r})"

    @property
    def key_ids(self) -> list[str]:
        """The IDs of the keys it decrypts with."""
        return sorted(self._ciphers)

    def seal(self, text: str) -> str:
        """``text`` encrypted under the current key."""
        nonce = random_bytes(_NONCE)  # as os.urandom, without a system call per value
        aad = f"{PREFIX}{self.current}".encode("ascii")
        sealed = self._ciphers[self.current].encrypt(
            nonce, text.encode("utf-8", "surrogatepass"), aad
        )
        return f"{PREFIX}{self.current}:{base64.b64encode(nonce + sealed).decode('ascii')}"

    def unseal(self, text: str) -> str:
        """The plain text of a sealed value; text that is not sealed as it is."""
        if not text.startswith(PREFIX):
            return text
        match = TOKEN.fullmatch(text)
        if match is None:
            raise SerializationError("a stored encrypted value is damaged (not pdx1:key:data)")
        key_id, data = match.groups()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SerializationError(
                f"a stored value is encrypted with key {key_id!r}, which this app's "
                f"EncryptingSerializer does not have (it has {', '.join(self.key_ids)}): add "
                "that key to keys="
            )
        try:
            raw = base64.b64decode(data, validate=True)
            plain = cipher.decrypt(raw[:_NONCE], raw[_NONCE:], f"{PREFIX}{key_id}".encode())
        except (self._invalid_tag, ValueError, binascii.Error):
            raise SerializationError(
                f"a stored value encrypted with key {key_id!r} cannot be decrypted: the key "
                "is not the one that encrypted it, or the value was altered"
            ) from None
        return bytes(plain).decode("utf-8", "surrogatepass")

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        """Encode with the inner serializer, then seal."""
        return self.seal(self.inner.dumps(value, type_hint))

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        """Unseal, then decode with the inner serializer."""
        return self.inner.loads(self.unseal(data), type_hint)

    def reseal(self, text: str) -> str | None:
        """``text`` with every value sealed under another key than the current one sealed
        again under the current key; None when there is none (what ``rekey`` writes)."""
        changed = False

        def again(match: re.Match[str]) -> str:
            nonlocal changed
            if match.group(1) == self.current:
                return match.group(0)
            changed = True
            return self.seal(self.unseal(match.group(0)))

        rewritten = TOKEN.sub(again, text)
        return rewritten if changed else None
