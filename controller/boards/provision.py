"""Provisioning a board over its serial line: the one moment a board learns whom to trust.

Physical access is the authority (issue 6): over USB the controller gives
the board its Ed25519 identity (RFC 8032; made on the board by `keygen`, or
a seed made here when the board has no good entropy), its overlay
certificate, the controller's public key and the first configuration, a
COSE_Sign1 (RFC 9052 §4.2) that the board verifies with that key before it
writes anything. Afterwards the board takes configuration from the LAN
only when signed by that key.

The controller side (`BoardService.enroll_board`, or a test double) is a
parameter: anything with an ``enroll_board(**kw)`` method, or a plain
callable, taking keywords ``board_id, pub, kind, fw, name, aor`` and
returning a mapping with ``controller_key, ca_key, hb_key, cert, config``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from sipmesh.boards.serial_link import SerialLink
from sipmesh.proto import cbor, ed25519

#: progress(step) before each step ("hello", "keygen", "enroll", "provision", "info").
Progress = Callable[[str], None]

ENROLLMENT_KEYS = ("controller_key", "ca_key", "hb_key", "cert", "config")
# The board verifies an Ed25519 signature and writes two files: seconds on
# an ESP32 (pure-Python Ed25519), so this step gets more than one request's wait.
PROVISION_TIMEOUT = 60.0
KEY_ON = ("board", "controller")


class ProvisionError(Exception):
    """Provisioning cannot go on: the controller side refused, or the board's answer is wrong."""


class Enroller(Protocol):
    """The controller side: issues the certificate, keys and first signed configuration."""

    def enroll_board(
        self, *, board_id: str, pub: bytes, kind: str, fw: str, name: str, aor: str
    ) -> Mapping[str, Any]: ...


def _enroll(controller: Any, **kw: Any) -> Mapping[str, Any]:
    fn = getattr(controller, "enroll_board", controller)
    try:
        enrollment = fn(**kw)
    except ProvisionError:
        raise
    except Exception as e:
        raise ProvisionError(f"the controller refused to enroll {kw['board_id']}: {e}") from e
    missing = [k for k in ENROLLMENT_KEYS
               if not isinstance(enrollment.get(k), bytes) or not enrollment[k]]
    if missing:
        raise ProvisionError("the controller's enrollment lacks " + ", ".join(missing))
    return enrollment


def config_seq(cose_sign1: bytes) -> int:
    """The ``seq`` inside a signed configuration (COSE_Sign1 payload, RFC 9052 §4.2)."""
    try:
        item = cbor.loads(cose_sign1)
        body = item.value if isinstance(item, cbor.Tag) else item
        seq = cbor.loads(body[2])["seq"]
    except (cbor.CBORDecodeError, TypeError, KeyError, IndexError) as e:
        raise ProvisionError(f"the configuration is not a signed board configuration: {e}") from e
    if type(seq) is not int:
        raise ProvisionError("the configuration has no integer seq")
    return seq


def provision(
    link: SerialLink,
    controller: Enroller | Callable[..., Mapping[str, Any]],
    *,
    name: str,
    aor: str,
    board_key: str = "board",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Provision the board on ``link``; return what it reports afterwards.

    Steps: hello, then the key pair (``keygen`` on the board, or a seed
    made here with ``board_key="controller"``), enrollment by the
    controller side, the ``provision`` op, a check that the board kept the
    expected public key, id and configuration seq, then ``info``. Raises
    ProvisionError for wrong answers, SerialError for the line.
    """
    if board_key not in KEY_ON:
        raise ProvisionError(f"board_key must be one of {', '.join(KEY_ON)}")
    step = progress or (lambda _s: None)
    step("hello")
    hello = link.request("hello", timeout=PROVISION_TIMEOUT)  # it may still be booting
    board_id = hello.get("id")
    if not isinstance(board_id, str):
        raise ProvisionError("the board's hello has no id")
    seed = None
    if board_key == "board":
        step("keygen")
        pub = link.request("keygen", timeout=PROVISION_TIMEOUT).get("pub")
        if not isinstance(pub, bytes) or len(pub) != 32:
            raise ProvisionError("the board's keygen did not return a 32-byte public key")
    else:
        seed = os.urandom(32)
        pub = ed25519.public_key(seed)
    step("enroll")
    enrollment = _enroll(
        controller, board_id=board_id, pub=pub, kind=str(hello.get("kind", "")),
        fw=str(hello.get("fw", "")), name=name, aor=aor,
    )
    seq = config_seq(enrollment["config"])
    args = {k: enrollment[k] for k in ENROLLMENT_KEYS}
    if seed is not None:
        args["seed"] = seed
    step("provision")
    answer = link.request("provision", timeout=PROVISION_TIMEOUT, **args)
    if answer.get("pub") != pub:
        raise ProvisionError("the board reports another public key than the one enrolled")
    if answer.get("id") != board_id:
        raise ProvisionError(f"the board changed its id from {board_id} to {answer.get('id')}")
    if answer.get("cfg") != seq:
        raise ProvisionError(f"the board holds configuration {answer.get('cfg')}, not {seq}")
    step("info")
    info = link.request("info")
    return {
        "id": board_id,
        "name": name,
        "aor": aor,
        "kind": hello.get("kind"),
        "pub": pub.hex(),
        "key_on": board_key,
        "cfg": seq,
        "state": info.get("state"),
        "info": info,
    }
