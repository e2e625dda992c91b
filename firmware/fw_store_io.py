"""The file work of ``fw_store.Store``: boot recovery and crash-safe writes.

Loaded only while a store method runs (``App.task`` drops it afterwards),
so an idle board holds neither this code nor CBOR (issue 6).

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


def _check(st, name, raw):
    m = cbor.loads(raw)
    if name == IDENTITY:
        # raw is also an identity map offered by `provision`
        if not isinstance(m, dict) or m.get("id") != st.id:
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
    cfg = st._checked(m["cose"], st.identity["controller_key"], 0)
    if cfg.get("seq") != m.get("seq"):
        raise StoreError("bad config record: seq")
    return m["cose"], cfg


def _recover(st, name):
    # X if it checks, else a complete X.tmp (finish the rename), else X.old (put back).
    p = "%s/%s.cbor" % (st.root, name)
    seen = False
    for suffix in ("", ".tmp", ".old"):
        try:
            raw = _read(p + suffix)
        except OSError:
            continue
        seen = True
        try:
            v = _check(st, name, raw)
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


def _write(st, name, data):
    """Replace file name with data by the crash-safe sequence of the module doc."""
    cur = "%s/%s.cbor" % (st.root, name)
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


def load(st):
    """``Store.load``: recover and load both files; return the state."""
    try:
        os.mkdir(st.root)
    except OSError:
        pass
    st.identity = _recover(st, IDENTITY)
    st.cose = st.config = None
    st.seq = 0
    if st.identity is not None:
        got = _recover(st, CONFIG)
        if got is not None:
            st.cose, st.config = got
            st.seq = st.config["seq"]
    return st.state()


def next_boot(st):
    """``Store.next_boot``: increment and store the boot counter; return it."""
    n = (_recover(st, BOOT) or 0) + 1
    _write(st, BOOT, cbor.dumps(n))
    return n


def set_config(st, cose_bytes, cfg):
    """``Store.set_config``: store cose_bytes, whose payload map cfg the store
    has verified (for this board, newer than st.seq)."""
    return _config(st, cose_bytes, cfg)


def _config(st, cose_bytes, cfg, identity=None):
    if identity is not None:
        _write(st, IDENTITY, cbor.dumps(identity))
        st.identity = identity
        st.cose = st.config = None
        st.seq = 0
    cose_bytes = bytes(cose_bytes)
    _write(st, CONFIG, cbor.dumps({"cose": cose_bytes, "seq": cfg["seq"]}))
    st.cose = cose_bytes
    st.config = cfg
    st.seq = cfg["seq"]
    return cfg


def check_identity(st, identity):
    """Refuse (StoreError) an identity map `provision` offers that boot would refuse."""
    _check(st, IDENTITY, cbor.dumps(identity))


def provision(st, identity, cose_bytes, cfg):
    """``Store.provision``: a new identity and its first configuration.

    The store has checked the identity (``check_identity``) and verified the
    configuration (payload map cfg) with the new controller key before
    anything is written; any seq is accepted, because physical access to
    the serial line is the authority that may reset a board.
    """
    return _config(st, cose_bytes, cfg, identity)
