"""Transient modules: what a piece of work imported leaves the heap when it ends.

MicroPython loads .mpy bytecode into the heap (an ESP32 has about 100 KB
free, issue 6), so a board imports the code of rare work (a signature
check, a pull, an overlay refresh) for that work only and forgets it
afterwards: out of ``sys.modules`` and out of its package, then collected.
The firmware and the codecs here (``boardcfg``) share this one function.
"""

import gc
import sys


def forget(before, keep=(), clear=()):
    """Drop the modules imported since before (a list of names), but keep, and collect.

    The globals of those named in clear (every one dropped when clear is True)
    are emptied too: the GC is conservative,
    and a stale word it takes for a pointer into a dropped module (seen on the
    unix port: 4 KB of cbor pinned after boot) then pins one object, not the
    module. Only for modules no other code may still be running.
    """
    for name in list(sys.modules):
        if name not in before and name not in keep:
            m = sys.modules.pop(name)
            if clear is True or name in clear:
                m.__dict__.clear()
            i = name.rfind(".")
            if i > 0 and name[:i] in sys.modules:
                try:
                    delattr(sys.modules[name[:i]], name[i + 1 :])
                except AttributeError:
                    pass
    m = None
    gc.collect()
