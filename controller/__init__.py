"""sipmesh: a self-configuring telephony edge for branch offices.

This package is the CPython controller. Its subpackage ``sipmesh.proto`` is
the portable codec layer shared with the MicroPython boards; it is built from
the repository's ``shared/proto/`` folder (see ``docs/architecture.md``).
"""

__version__ = "0.1.0"
