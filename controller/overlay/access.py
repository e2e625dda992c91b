"""Access control policies for stored values (RFC 6940 §7.3).

Every Kind names one policy; a value may be written (or overwritten) only
when the signer's certificate matches the Resource-ID as the policy says.
"H" is the overlay's hash, the Resource-ID function of CHORD-RELOAD
(:func:`sipmesh.overlay.ids.resource_id`, SHA-1 truncated to 128 bits,
§10.2). The signer is the StoredData's signer; for original (replica
number 0) stores the peer must also call :func:`check_policy` with the
StoreReq message's signer (§7.3, §7.4.1.1).

A value whose signer does not conform is refused with Error_Forbidden
(§7.4.1.1), raised as ``StorageError(ERROR_FORBIDDEN, ...)``.
"""

from __future__ import annotations

from sipmesh.overlay.ids import resource_id as H
from sipmesh.overlay.kinds import (
    NODE_MATCH,
    NODE_MULTIPLE,
    USER_MATCH,
    USER_NODE_MATCH,
    KindDef,
)
from sipmesh.overlay.security import CertInfo
from sipmesh.proto.reload import ERROR_FORBIDDEN
from sipmesh.proto.reload_storage import DictionaryEntry, StoredData


def _forbidden(reason: str) -> Exception:
    # storage.py imports this module, so its error type is imported late.
    from sipmesh.overlay.storage import StorageError

    return StorageError(ERROR_FORBIDDEN, reason)


def node_multiple_resource(node_id: bytes, i: int) -> bytes:
    """``H(Node-ID || i)`` of NODE-MULTIPLE (§7.3.4), ``i`` as a uint32 in
    network byte order.

    The RFC leaves the encoding of ``i`` open. RELOAD encodes every integer
    of its structures as a fixed-width unsigned big-endian number (§6.2:
    presentation language of TLS, RFC 5246 §4.4), and ``max-node-multiple``
    is an xsd:int (§11.1), so a uint32 covers every allowed ``i`` with one
    byte form; ASCII decimal would be a second, text, convention.
    ``i`` runs from 1 to the Kind's ``max_node_multiple``: §11.1 calls that
    element "the maximum value for the i counter" and requires it > 0.
    """
    return H(bytes(node_id) + i.to_bytes(4, "big"))


def check_policy(kind: KindDef, resource_id: bytes, stored: StoredData, signer: CertInfo) -> None:
    """Check that ``signer`` may write ``stored`` of ``kind`` at ``resource_id``.

    - USER-MATCH (§7.3.1): H(user name) == Resource-ID.
    - NODE-MATCH (§7.3.2): H(Node-ID) == Resource-ID for a Node-ID of the
      signer's certificate (the one cert_hash names).
    - USER-NODE-MATCH (§7.3.3): H(user name) == Resource-ID and the
      dictionary key equals a Node-ID of that certificate.
    - NODE-MULTIPLE (§7.3.4): H(Node-ID || i) == Resource-ID for some
      1 <= i <= max_node_multiple (see :func:`node_multiple_resource`).

    Raises StorageError with Error_Forbidden.
    """
    rid = bytes(resource_id)
    user_ok = signer.user_name is not None and H(signer.user_name) == rid
    policy = kind.policy
    if policy == USER_MATCH:
        if not user_ok:
            raise _forbidden("USER-MATCH: the signer's user name does not hash to the resource")
    elif policy == NODE_MATCH:
        if not any(H(n) == rid for n in signer.node_ids):
            raise _forbidden("NODE-MATCH: no Node-ID of the signer hashes to the resource")
    elif policy == USER_NODE_MATCH:
        if not user_ok:
            raise _forbidden("USER-NODE-MATCH: the user name does not hash to the resource")
        value = stored.value
        if not isinstance(value, DictionaryEntry) or value.key not in signer.node_ids:
            raise _forbidden("USER-NODE-MATCH: the dictionary key is not the signer's Node-ID")
    elif policy == NODE_MULTIPLE:
        if not any(
            node_multiple_resource(n, i) == rid
            for n in signer.node_ids
            for i in range(1, kind.max_node_multiple + 1)
        ):
            raise _forbidden("NODE-MULTIPLE: no H(Node-ID || i) equals the resource")
    else:
        raise _forbidden(f"unknown access control policy {policy!r}")
