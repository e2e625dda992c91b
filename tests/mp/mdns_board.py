"""A board that only runs fw_mdns, driven line by line over stdin (MicroPython).

Usage: ``micropython mdns_board.py IP INSTANCE [TXT-JSON]``. Prints
``announced INSTANCE HOST`` once probing and the first announcement are
done, and ``log ...`` lines from the responder. Commands: ``txt JSON``
(update_txt, answers ``txt-updated``), ``find SERVICE TIMEOUT_MS``
(answers ``found JSON``), ``heap`` (``heap ALLOC FREE MODULES`` after a
collect: the heap the responder adds, and its modules then imported),
``stop`` (goodbyes, ``stopped``, exit).
"""

import asyncio
import gc
import json
import sys

asyncio.Event()
gc.collect()
BASE = gc.mem_alloc()

import fw_mdns  # noqa: E402 - after the base figure


async def main():
    ip, instance = sys.argv[1], sys.argv[2]
    txt = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {"v": "1", "id": instance}
    r = fw_mdns.Responder(ip, instance, txt=txt)
    r.log = lambda line: print("log", line)
    await r.start()
    print("announced", r.instance, r.host)
    stdin = asyncio.StreamReader(sys.stdin)
    while True:
        line = await stdin.readline()
        if not line:
            break
        cmd, _, arg = line.decode().strip().partition(" ")
        if cmd == "txt":
            r.update_txt(json.loads(arg))
            print("txt-updated")
        elif cmd == "find":
            service, _, timeout = arg.partition(" ")
            print("found", json.dumps(await fw_mdns.find(service, int(timeout or 3000), ip)))
        elif cmd == "heap":
            gc.collect()
            print("heap", gc.mem_alloc() - BASE, gc.mem_free(),
                  ",".join(sorted(m for m in sys.modules if m.startswith("fw_mdns"))))
        elif cmd == "stop":
            break
    await r.stop()
    print("stopped")


asyncio.run(main())
