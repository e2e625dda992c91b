"""The controller's board-signing key: the one Ed25519 key (RFC 8032 §5.1)
whose signature a provisioned board requires on every configuration.

It is made once in ``DATA_DIR/boards-key`` (the 32-byte seed, 0600, written
atomically) and never leaves the controller; boards get its public key over
serial at provisioning. Losing or replacing it means re-provisioning every
board, so a file that exists but is unreadable is an error, never a reason
to make a new key. ``kid`` (the first 8 bytes of SHA-256 of the public key)
goes into the COSE unprotected header (RFC 9052 §3.1, label 4) and the
controller's mDNS TXT record so a board can tell its controller from others.
"""

from __future__ import annotations

import os
from pathlib import Path

import nacl.exceptions
import nacl.signing

from sipmesh.overlay.enroll import write_private
from sipmesh.proto import cose

FILE_NAME = "boards-key"
SEED_LEN = 32


class BoardKeyError(Exception):
    """The key file exists but is not a usable Ed25519 seed."""


class BoardKey:
    """Signs board configurations as COSE_Sign1 (RFC 9052 §4.2, alg EdDSA -8)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_LEN:
            raise BoardKeyError(f"a board-signing key is a {SEED_LEN}-byte seed")
        self._signing = nacl.signing.SigningKey(seed)
        self.pub = bytes(self._signing.verify_key)
        self.kid = cose.key_id(self.pub)

    @classmethod
    def load_or_make(cls, data_dir: str | Path) -> BoardKey:
        """The key in ``data_dir/boards-key``, made there first if absent."""
        path = Path(data_dir) / FILE_NAME
        try:
            seed = path.read_bytes()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            seed = os.urandom(SEED_LEN)
            write_private(path, seed)
            return cls(seed)
        except OSError as e:
            raise BoardKeyError(f"cannot read {path}: {e.strerror}") from e
        if len(seed) != SEED_LEN:
            raise BoardKeyError(f"{path} holds {len(seed)} bytes, not a {SEED_LEN}-byte seed; "
                                "restore it from a backup (boards trust only this key)")
        return cls(seed)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of message (RFC 8032 §5.1.6)."""
        return self._signing.sign(message).signature

    def sign_config(self, payload: bytes) -> bytes:
        """The COSE_Sign1 of a configuration payload, with this key's kid."""
        return cose.encode_sign1(payload, self.sign, kid=self.kid)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when signature is this key's over message (for self-checks)."""
        try:
            self._signing.verify_key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return False
        return True
