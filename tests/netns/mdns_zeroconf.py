"""python-zeroconf as the judge of a board's mDNS, run inside a namespace.

``browse IP TYPE``: browse TYPE on the interface with address IP and print
one JSON line per change: {"event": "added"|"updated"|"removed", "name",
"port", "addresses", "txt", "t"} (t: seconds since the browser started).
``register IP TYPE NAME PORT TXT-JSON``: register a service, print
``registered``. Both run until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf


def _out(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


async def _stdin_closed() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def browse(ip: str, stype: str) -> None:
    azc = AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
    start = time.monotonic()
    pending: set[asyncio.Task] = set()

    async def report(name: str, change: ServiceStateChange) -> None:
        event = change.name.lower()
        if change is ServiceStateChange.Removed:
            _out({"event": event, "name": name, "t": time.monotonic() - start})
            return
        info = AsyncServiceInfo(stype, name)
        ok = await info.async_request(azc.zeroconf, 3000)
        _out({
            "event": event, "name": name, "ok": ok, "port": info.port,
            "server": info.server, "addresses": info.parsed_addresses(),
            "txt": {k.decode(): (v.decode() if v is not None else None)
                    for k, v in (info.properties or {}).items()},
            "t": time.monotonic() - start,
        })

    def handler(zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        task = asyncio.ensure_future(report(name, state_change))
        pending.add(task)
        task.add_done_callback(pending.discard)

    browser = AsyncServiceBrowser(azc.zeroconf, [stype], handlers=[handler])
    _out({"event": "browsing"})
    await _stdin_closed()
    await browser.async_cancel()
    await azc.async_close()


async def register(ip: str, stype: str, name: str, port: int, txt: dict) -> None:
    azc = AsyncZeroconf(interfaces=[ip], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(stype, f"{name}.{stype}", addresses=[bytes(map(int, ip.split(".")))],
                            port=port, properties=txt, server="controller.local.")
    await azc.async_register_service(info)
    _out({"event": "registered"})
    await _stdin_closed()
    await azc.async_unregister_service(info)
    await azc.async_close()


def main() -> None:
    mode, ip, stype = sys.argv[1:4]
    if mode == "browse":
        asyncio.run(browse(ip, stype))
    else:
        asyncio.run(register(ip, stype, sys.argv[4], int(sys.argv[5]), json.loads(sys.argv[6])))


if __name__ == "__main__":
    main()
