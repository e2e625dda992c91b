"""Kind definitions of the overlay's data (RFC 6940 §7.4.5, §11.1).

A Kind is what the configuration document's ``<kind>`` element declares:
an id, a data model (§7.2), an access control policy (§7.3) and the
limits ``max-count`` / ``max-size`` (and ``max-node-multiple`` for
NODE-MULTIPLE). The configuration parser produces :class:`KindDef`
values; the codec decoders take :func:`models` of them, because the data
model of a Kind is not on the wire (§7.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sipmesh.proto.reload_storage import MODEL_ARRAY, MODEL_DICTIONARY, MODEL_SINGLE

USER_MATCH = "USER-MATCH"
NODE_MATCH = "NODE-MATCH"
USER_NODE_MATCH = "USER-NODE-MATCH"
NODE_MULTIPLE = "NODE-MULTIPLE"

POLICIES = (USER_MATCH, NODE_MATCH, USER_NODE_MATCH, NODE_MULTIPLE)
DATA_MODELS = (MODEL_SINGLE, MODEL_ARRAY, MODEL_DICTIONARY)

_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class KindDef:
    """One Kind (§11.1 ``<kind>``): ``max_count`` values of at most ``max_size``
    bytes each per Resource-ID; ``max_node_multiple`` is the largest ``i`` of
    NODE-MULTIPLE (§7.3.4) and must be 0 for every other policy.

    Raises ValueError for a definition the RFC does not allow: USER-NODE-MATCH
    on a non-dictionary Kind (§7.3.3), NODE-MULTIPLE without a maximum > 0
    (§11.1 ``max-node-multiple``), ids or limits outside uint32.
    """

    kind_id: int
    name: str
    model: str
    policy: str
    max_count: int
    max_size: int
    max_node_multiple: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.kind_id <= _U32:
            raise ValueError(f"kind id {self.kind_id} outside 1..2^32-1")
        if self.model not in DATA_MODELS:
            raise ValueError(f"kind {self.kind_id}: unknown data model {self.model!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"kind {self.kind_id}: unknown access control {self.policy!r}")
        if self.policy == USER_NODE_MATCH and self.model != MODEL_DICTIONARY:
            raise ValueError(f"kind {self.kind_id}: USER-NODE-MATCH needs the dictionary model")
        if not 0 < self.max_count <= _U32 or not 0 <= self.max_size <= _U32:
            raise ValueError(f"kind {self.kind_id}: max_count/max_size out of range")
        if self.policy == NODE_MULTIPLE:
            if not 0 < self.max_node_multiple <= _U32:
                raise ValueError(f"kind {self.kind_id}: NODE-MULTIPLE needs max_node_multiple > 0")
        elif self.max_node_multiple:
            raise ValueError(f"kind {self.kind_id}: max_node_multiple only for NODE-MULTIPLE")


def models(kinds: Mapping[int, KindDef] | Iterable[KindDef]) -> dict[int, str]:
    """``{kind_id: model}`` for the reload_storage decoders."""
    defs = kinds.values() if isinstance(kinds, Mapping) else kinds
    return {k.kind_id: k.model for k in defs}
