"""Portable codecs shared by the controller (CPython) and the boards (MicroPython).

Every module here runs unchanged on CPython 3.11+ and MicroPython 1.23+;
on a board the folder is installed as /lib/sipmesh/proto/ so that
``import sipmesh.proto.cbor`` works on both runtimes.
"""
