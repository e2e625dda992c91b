"""Portable checks of sipmesh.proto.transient (forgetting the modules a piece of work imported)."""

import sys

from portable import eq

import sipmesh.proto as pkg
from sipmesh.proto import transient


def _unload(*names):
    # out of sys.modules and off the package, or `from pkg import x` would not import
    for name in names:
        sys.modules.pop("sipmesh.proto." + name, None)
        if hasattr(pkg, name):
            delattr(pkg, name)


def check_forgets_what_was_imported_since():
    _unload("heartbeat")
    before = list(sys.modules)
    from sipmesh.proto import heartbeat

    eq(hasattr(pkg, "heartbeat"), True, "imported")
    transient.forget(before)
    eq("sipmesh.proto.heartbeat" in sys.modules, False, "out of sys.modules")
    eq(hasattr(pkg, "heartbeat"), False, "out of its package")
    eq(callable(heartbeat.seal), True, "a reference held still works")


def check_keeps_and_clears():
    _unload("heartbeat", "device_record")
    before = list(sys.modules)
    from sipmesh.proto import device_record, heartbeat

    transient.forget(before, keep=("sipmesh.proto.device_record",),
                     clear=("sipmesh.proto.heartbeat",))
    eq("sipmesh.proto.device_record" in sys.modules, True, "kept")
    eq("sipmesh.proto.heartbeat" in sys.modules, False, "dropped")
    eq(hasattr(heartbeat, "seal"), False, "emptied")
    eq(hasattr(device_record, "encode"), True, "kept intact")
    transient.forget(before)
