"""What a peer takes from the overlay configuration document (RFC 6940 §11.1).

The peer needs a handful of values from the signed configuration document:
the overlay name (its hash goes in every forwarding header, §6.3.2), the
configuration sequence (checked on every request, §6.3.2.1), the kinds with
their data models, policies and size limits (§7.4.5, §11.1), the initial
TTL, the Chord update interval and whether recovery is reactive (§10.7).
Keeping them in one small value lets tests and the benchmark run peers
without an enrollment server, and lets a peer built from a fetched document
behave the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sipmesh.overlay.kinds import KindDef


def overlay_hash(name: str) -> int:
    """The lower 32 bits of SHA-1 of the overlay name (§6.3.2)."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[-4:], "big")


@dataclass(frozen=True)
class OverlaySettings:
    """Overlay-wide parameters a peer runs with."""

    name: str
    kinds: dict[int, KindDef] = field(default_factory=dict)
    configuration_sequence: int = 1
    initial_ttl: int = 100
    max_message_size: int = 65536
    reliability_timer: float = 3.0
    update_interval: float = 600.0
    reactive: bool = True
    request_lifetime: float = 15.0

    @property
    def hash(self) -> int:
        return overlay_hash(self.name)

    def models(self) -> dict[int, str]:
        """kind id -> data model, as the storage body decoders want it."""
        return {k: d.model for k, d in self.kinds.items()}

    @classmethod
    def from_config(cls, config, **overrides) -> OverlaySettings:
        """Build from a parsed configuration document (config_doc.OverlayConfig)."""
        values = dict(
            name=config.instance_name,
            kinds={k.kind_id: k for k in config.kinds},
            configuration_sequence=config.sequence,
            initial_ttl=getattr(config, "initial_ttl", 100) or 100,
            max_message_size=getattr(config, "max_message_size", 65536) or 65536,
            update_interval=float(getattr(config, "chord_update_interval", 600) or 600),
            reactive=bool(getattr(config, "chord_reactive", True)),
        )
        values.update(overrides)
        return cls(**values)
