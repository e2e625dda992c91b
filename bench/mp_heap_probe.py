"""Heap-floor probe, run under a capped heap by harness.heap_floor().

``mp_heap_probe.py FILE [cbor-decode|frame-decode]``: import the codecs,
read FILE, then optionally run one operation on it; print ok on success.
"""

import sys

from sipmesh.proto import cbor, frame

f = open(sys.argv[1], "rb")
data = f.read()
f.close()
op = sys.argv[2] if len(sys.argv) > 2 else None
if op == "cbor-decode":
    value = cbor.loads(data)
elif op == "frame-decode":
    frames = frame.FrameDecoder().feed(data)
    assert len(frames) == 1
print("ok")
