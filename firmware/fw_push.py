"""The board's push listener: ``POST /config`` over HTTP/1.1 (RFC 9112), one request a connection.

It stays resident for the board's whole life, so it holds only the
listening socket and the accept path below (heap budget, issue 6). Each
connection is read and answered by ``fw_http`` (the bounded request reader,
the limits and the answers); the first connection to open loads fw_http if
no one else had, and the last one to close drops it again, as it does while
the configuration is checked.

Runs on MicroPython's asyncio and on CPython's.
"""

import asyncio
import gc
import sys


async def serve_push(ip, port, on_config, *, timeout=10, log=None, lock=None, reading=None):
    """Listen for configuration pushes: ``POST /config`` with a COSE_Sign1 body.

    ``on_config(body) -> (status, reason)`` (plain or coroutine function)
    decides: 204 accepted, 403 refused with a one-line reason, 400 garbage;
    the reason goes back as text/plain. Other paths get 404, other methods
    405, a malformed request 400, a body over 8 KiB 413, a request not
    complete within timeout seconds 408, a connection beyond two at once
    503. ``log(text)`` gets one line per connection whose answer on_config
    did not give, once it is closed. Returns the asyncio server.

    Heap (issue 6): fw_http's code and a job's modules should not be loaded
    together, yet a slow client must not stall the board's jobs. So a
    request waits for a running job (``lock``, the application's job lock,
    not taken) at most 2 s before it is read, and ``reading[0]`` counts the
    requests being read or answered (fw_http loaded), for the application's
    jobs to wait for in turn.
    """
    # connections open, fw_http loaded by them
    st = [0, False]

    def drop():
        # the last connection out drops fw_http, if it was not loaded before
        if st[0] == 1 and st[1]:
            sys.modules.pop("fw_http", None)
            gc.collect()

    if reading is None:
        reading = [0]

    async def counted(aw):
        # fw_http is loaded while aw runs: the application's jobs wait for it
        reading[0] += 1
        try:
            return await aw
        finally:
            reading[0] -= 1

    async def handle(rd, w):
        if not st[0]:
            st[1] = "fw_http" not in sys.modules
        st[0] += 1
        try:
            for _ in range(100):
                if lock is None or not lock.locked():
                    break
                await asyncio.sleep(0.02)
            import fw_http

            code, x = await counted(fw_http.receive(rd, w, st[0], timeout))
            note = "%d %s" % (code, x) if code else None
            if not code:
                # The check of the body loads the verifier: the reader's code is
                # not kept beside it (heap budget).
                fw_http = None
                drop()
                try:
                    got = on_config(x)
                    if not isinstance(got, tuple):
                        got = await got
                    code, x = got
                except Exception as e:  # noqa: BLE001 - answered 500, not fatal
                    code, x, note = 500, "", "500 %r" % (e,)
                import fw_http
            await counted(fw_http.reply(rd, w, code, x, note, log))
        except Exception:  # noqa: BLE001 - no fw_http: close, keep listening
            w.close()
        finally:
            fw_http = x = None
            drop()
            st[0] -= 1

    return await asyncio.start_server(handle, ip, port)
