"""Run the board application (fw_app.main) and report its heap lows.

argv[1]: the push listener's port (the test picks a free one instead of
7381). A watcher task samples ``gc.mem_free()`` after a collection every
few milliseconds and prints ``HEAP low <bytes> free`` to stderr whenever
the lowest live-heap free figure drops. Synchronous work (an Ed25519
verify) runs between samples, so the smallest ``-X heapsize`` that
survives is the real peak; this line is the cheaper indication.
"""

import asyncio
import gc
import sys

import fw_app

fw_app.PUSH_PORT = int(sys.argv[1])
_low = [1 << 30]


async def _watch():
    while True:
        gc.collect()
        f = gc.mem_free()
        if f < _low[0]:
            _low[0] = f
            sys.stderr.write("HEAP low %d free\n" % f)
        await asyncio.sleep_ms(2)


_run = fw_app.App.run


async def _run_watched(self):
    asyncio.create_task(_watch())
    await _run(self)


fw_app.App.run = _run_watched
fw_app.main()
