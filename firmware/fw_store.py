"""The board's persistent state: its identity and its signed configuration.

CBOR files in board.DATA (and ``boot.cbor``, the boot counter):

- ``identity.cbor``: ``{"id", "seed", "pub", "cert", "controller_key",
  "ca_key", "hb_key"}``, written once by serial provisioning;
- ``config.cbor``: ``{"cose": <COSE_Sign1 bytes as received>, "seq": n}``;
  the signature is kept so the configuration is verified again at every boot.

A board loses power at any moment, so a file is never changed in place.
Writing X: remove stale X.tmp and X.old, write X.tmp, read it back and
check it, rename X to X.old, rename X.tmp to X, remove X.old. No rename
ever targets an existing file, so the order is equally right on littlefs,
FAT (where renaming onto an existing file fails) and the unix port's
VfsPosix (where it would replace). At boot ``load`` recovers each file:
X if it loads and verifies (a leftover X.tmp or X.old is removed); else a
complete, verified X.tmp (the rename is finished); else X.old (put back).
Whatever the crash point, the board comes up with the old or the new file,
never with a broken one; a file that fails is logged and left for the next
write to replace.

Test hook: when the environment variable SIPMESH_CRASH_AT names a step
("tmp-partial", "tmp-written", "old-renamed", "new-renamed", "done"),
optionally prefixed with the file ("config:old-renamed"), the write prints
``CRASHPOINT <step> <file>`` to stderr and blocks there, so a test can kill
the process with SIGKILL at exactly that point.
"""

import gc
import os
import sys

import fw_log

from sipmesh.proto import cbor

IDENTITY = "identity"
CONFIG = "config"
BOOT = "boot"  # boot counter for heartbeats: (boot, n) must grow at the controller

try:
    _CRASH = os.getenv("SIPMESH_CRASH_AT")
except AttributeError:
    _CRASH = None


class StoreError(Exception):
    """A stored or offered file that does not check (bad CBOR, shape, signature)."""


def _crashpoint(step, name):
    if _CRASH and name != BOOT and (_CRASH == step or _CRASH == name + ":" + step):
        sys.stderr.write("CRASHPOINT %s %s\n" % (step, name))
        import time

        while True:
            try:
                if sys.stdin.read(1):
                    continue
            except Exception:  # noqa: BLE001 - any stdin: keep blocking until killed
                pass
            time.sleep(1)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _accept(cose_bytes, controller_key, board_id, current_seq):
    from sipmesh.proto import boardcfg

    return boardcfg.accept(cose_bytes, controller_key, board_id, current_seq)


class Store:
    """Identity and configuration of this board, in RAM and in ``root``.

    ``verify(cose, controller_key, board_id, current_seq) -> payload map``
    judges a configuration (default: ``sipmesh.proto.boardcfg.accept``, which
    raises BoardConfigError); tests may pass another.
    """

    def __init__(self, root, board_id, verify=None):
        self.root = root
        self.id = board_id
        self.verify = verify or _accept
        self.identity = self.cose = self.config = None
        self.seq = 0

    def state(self):
        """"unprovisioned", "provisioned" (identity, no config) or "configured"."""
        if self.identity is None:
            return "unprovisioned"
        return "configured" if self.config is not None else "provisioned"

    def load(self):
        """Recover and load both files; return the state. Never raises for bad files."""
        try:
            os.mkdir(self.root)
        except OSError:
            pass
        self.identity = self._recover(IDENTITY)
        self.cose = self.config = None
        self.seq = 0
        if self.identity is not None:
            got = self._recover(CONFIG)
            if got is not None:
                self.cose, self.config = got
                self.seq = self.config["seq"]
        return self.state()

    def _check(self, name, raw):
        m = cbor.loads(raw)
        if name == IDENTITY:
            # raw is also an identity map offered by `provision`
            if not isinstance(m, dict) or m.get("id") != self.id:
                raise StoreError("bad identity: for another board")
            for k in ("seed", "pub", "controller_key", "ca_key", "hb_key", "cert"):
                v = m.get(k)
                if not isinstance(v, bytes) or not v or (k != "cert" and len(v) != 32):
                    raise StoreError("bad identity: " + k)
            return m
        if name == BOOT:
            if type(m) is not int or m < 0:
                raise StoreError("bad boot counter")
            return m
        if not isinstance(m, dict) or not isinstance(m.get("cose"), bytes):
            raise StoreError("bad config record")
        cfg = self.verify(m["cose"], self.identity["controller_key"], self.id, 0)
        if cfg.get("seq") != m.get("seq"):
            raise StoreError("bad config record: seq")
        return m["cose"], cfg

    def _recover(self, name):
        # X if it checks, else a complete X.tmp (finish the rename), else X.old (put back).
        p = "%s/%s.cbor" % (self.root, name)
        seen = False
        for suffix in ("", ".tmp", ".old"):
            try:
                raw = _read(p + suffix)
            except OSError:
                continue
            seen = True
            try:
                v = self._check(name, raw)
            except Exception as e:  # noqa: BLE001 - any bad file is skipped, never fatal
                fw_log.log("store: %s%s refused: %s" % (p, suffix, e))
                continue
            if suffix:
                fw_log.log("store: %s recovered from %s" % (name, suffix))
                _remove(p)
                os.rename(p + suffix, p)
            _remove(p + ".tmp")
            _remove(p + ".old")
            return v
        if seen:
            # Left in place: the next write replaces them in the same safe order.
            fw_log.log("store: no usable %s" % name)
        return None

    def _write(self, name, data):
        """Replace file name with data by the crash-safe sequence of the module doc."""
        cur = "%s/%s.cbor" % (self.root, name)
        tmp = cur + ".tmp"
        old = cur + ".old"
        _remove(tmp)
        _remove(old)
        with open(tmp, "wb") as f:
            half = len(data) // 2 if _CRASH else len(data)
            f.write(data[:half])
            if _CRASH:
                f.flush()
                _crashpoint("tmp-partial", name)
            f.write(data[half:])
        _crashpoint("tmp-written", name)
        # The bytes read back must be the ones checked before the write; that
        # proves the file holds a verified record without a second signature check.
        if _read(tmp) != data:
            _remove(tmp)
            raise StoreError("%s read back differs" % name)
        try:
            os.rename(cur, old)
            _crashpoint("old-renamed", name)
        except OSError:
            pass
        os.rename(tmp, cur)
        _crashpoint("new-renamed", name)
        _remove(old)
        _crashpoint("done", name)

    def next_boot(self):
        """Increment and store the boot counter; return the new value."""
        n = (self._recover(BOOT) or 0) + 1
        self._write(BOOT, cbor.dumps(n))
        return n

    def set_config(self, cose_bytes):
        """Accept a configuration (signed by the controller, for this board, newer) and
        store it; return its payload map. Raises BoardConfigError (refused, nothing
        changes) or StoreError/OSError (write failed, the old file stays in force)."""
        if self.identity is None:
            from sipmesh.proto.boardcfg import BoardConfigError

            raise BoardConfigError("not provisioned")
        return self._config(cose_bytes, self.identity["controller_key"], self.seq)

    def _config(self, cose_bytes, key, seq, identity=None):
        gc.collect()
        cfg = self.verify(cose_bytes, key, self.id, seq)
        if identity is not None:
            self._write(IDENTITY, cbor.dumps(identity))
            self.identity = identity
            self.cose = self.config = None
            self.seq = 0
        cose_bytes = bytes(cose_bytes)
        self._write(CONFIG, cbor.dumps({"cose": cose_bytes, "seq": cfg["seq"]}))
        self.cose = cose_bytes
        self.config = cfg
        self.seq = cfg["seq"]
        return cfg

    def provision(self, identity, cose_bytes):
        """Write a new identity and its first configuration (serial `provision`).

        The configuration is verified with the new controller key before
        anything is written; any seq is accepted, because physical access to
        the serial line is the authority that may reset a board. Returns the
        payload map.
        """
        self._check(IDENTITY, cbor.dumps(identity))
        return self._config(cose_bytes, identity["controller_key"], 0, identity)
