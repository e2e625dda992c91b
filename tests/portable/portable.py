"""Tiny assertion helpers for checks that run on CPython and MicroPython.

pytest is not available on MicroPython, so portable checks are plain
functions named ``check_*`` that use ``assert`` and these helpers.
"""

import sys

MICROPYTHON = sys.implementation.name == "micropython"


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised; fail if it raised none or another type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    except Exception as e:  # noqa: BLE001 - report the wrong type clearly
        raise AssertionError(
            "expected %s, got %s: %s" % (exc_type.__name__, type(e).__name__, e)
        ) from None
    raise AssertionError("expected %s, nothing raised" % exc_type.__name__)


def eq(got, want, what=""):
    """Assert equality with a message that shows both sides."""
    if not got == want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


def unhex(s):
    """bytes.fromhex that ignores spaces (present on both runtimes)."""
    return bytes.fromhex(s.replace(" ", ""))
