"""The board's persistent state: its identity and its signed configuration.

CBOR files in board.DATA (and ``boot.cbor``, the boot counter):

- ``identity.cbor``: ``{"id", "seed", "pub", "cert", "controller_key",
  "ca_key", "hb_key"}``, written once by serial provisioning;
- ``config.cbor``: ``{"cose": <COSE_Sign1 bytes as received>, "seq": n}``;
  the signature is kept so the configuration is verified again at every boot.

This module is what an idle board holds: the state in RAM and the
questions asked about it. The file work (boot recovery, crash-safe writes,
provisioning, configuration changes, with CBOR and the verifier they need)
is in ``fw_store_io``, imported by the method that needs it; the board
application calls those methods through ``App.task``, which drops the
module again afterwards (heap budget, issue 6). See ``fw_store_io`` for the
write order and the SIPMESH_CRASH_AT test hook.
"""


class Store:
    """Identity and configuration of this board, in RAM and in ``root``.

    ``verify(cose, controller_key, board_id, current_seq) -> payload map``
    judges a configuration (default, when None:
    ``sipmesh.proto.boardcfg.accept``, which raises BoardConfigError);
    tests may pass another.
    """

    def __init__(self, root, board_id, verify=None):
        self.root = root
        self.id = board_id
        self.verify = verify
        self.identity = self.cose = self.config = None
        self.seq = 0

    def state(self):
        """"unprovisioned", "provisioned" (identity, no config) or "configured"."""
        if self.identity is None:
            return "unprovisioned"
        return "configured" if self.config is not None else "provisioned"

    def load(self):
        """Recover and load both files; return the state. Never raises for bad files."""
        import fw_store_io

        return fw_store_io.load(self)

    def next_boot(self):
        """Increment and store the boot counter; return the new value."""
        import fw_store_io

        return fw_store_io.next_boot(self)

    def _checked(self, cose_bytes, key, seq):
        """The payload map of a configuration verify() accepts, else BoardConfigError.

        The signature check is the board's highest heap peak (issue 6), so the
        default judge (``sipmesh.proto.boardcfg.accept``'s rules) runs in three
        stages, each with only its own modules loaded and no file code: the
        COSE structure (cose, CBOR) yields the signed bytes, Ed25519 alone
        checks them (RFC 8032 §5.1.7), then boardcfg checks the payload. The
        modules are forgotten after each stage.
        """
        import sys

        from sipmesh.proto.transient import forget

        before = list(sys.modules)
        try:
            if self.verify is not None:
                return self.verify(cose_bytes, key, self.id, seq)
            from sipmesh.proto import cose

            try:
                tbs, payload, sig = cose.signed_parts(cose_bytes, key)
            except cose.CoseError:
                tbs = None
            cose = None
            forget(before, (), True)
            if tbs is not None:
                from sipmesh.proto import ed25519

                if not ed25519.verify(bytes(key), tbs, sig):
                    tbs = None
                ed25519 = None
                forget(before, (), True)
            from sipmesh.proto import boardcfg

            if tbs is None:
                raise boardcfg.BoardConfigError(boardcfg.BAD_SIGNATURE)
            tbs = None
            return boardcfg.check(payload, self.id, seq)
        finally:
            # emptied too: nothing of theirs runs after this synchronous stretch
            cose = ed25519 = boardcfg = tbs = None
            forget(before, (), True)

    def set_config(self, cose_bytes):
        """Accept a configuration (signed by the controller, for this board, newer) and
        store it; return its payload map. Raises BoardConfigError (refused, nothing
        changes) or StoreError/OSError (write failed, the old file stays in force)."""
        if self.identity is None:
            from sipmesh.proto.boardcfg import BoardConfigError

            raise BoardConfigError("not provisioned")
        cfg = self._checked(cose_bytes, self.identity["controller_key"], self.seq)
        import fw_store_io

        return fw_store_io.set_config(self, cose_bytes, cfg)

    def provision(self, identity, cose_bytes):
        """Write a new identity and its first configuration (serial `provision`);
        return the payload map. See ``fw_store_io.provision``."""
        import sys

        from sipmesh.proto.transient import forget

        before = list(sys.modules)
        import fw_store_io

        fw_store_io.check_identity(self, identity)
        fw_store_io = None
        forget(before, (), True)
        cfg = self._checked(cose_bytes, identity["controller_key"], 0)
        import fw_store_io

        return fw_store_io.provision(self, identity, cose_bytes, cfg)
