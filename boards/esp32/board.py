"""ESP32 hardware layer: Wi-Fi station bring-up, identity, serial line, reset.

The board's management serial line is the USB-UART that also carries the
REPL, so the agent takes sys.stdin/sys.stdout and turns Ctrl-C off while it
owns them (a 0x03 inside a binary frame must not interrupt the app).
"""

import gc
import sys

import machine
import micropython

KIND = "esp32"
DATA = "/data"
_WIFI_TIMEOUT_MS = 30000


def board_id():
    """"sm-" + the 12 hex digits of the chip's factory MAC (machine.unique_id)."""
    import binascii

    h = binascii.hexlify(machine.unique_id()).decode()
    return "sm-" + ("000000000000" + h)[-12:]


async def net_up(net):
    """Join the configured Wi-Fi as a station; return the IPv4 address.

    Raises OSError without settings or when no address comes within 30 s;
    the application retries when a new configuration arrives.
    """
    import asyncio
    import time

    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        if not net or not net.get("ssid"):
            raise OSError("no Wi-Fi settings")
        wlan.connect(net["ssid"], net.get("psk", ""))
        t0 = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > _WIFI_TIMEOUT_MS:
                raise OSError("Wi-Fi: no connection to " + net["ssid"])
            await asyncio.sleep_ms(200)
    return wlan.ifconfig()[0]


def serial_take():
    """From now on Ctrl-C (a 0x03 byte inside a frame) does not interrupt the
    program; main.py calls this before the application loads."""
    micropython.kbd_intr(-1)


def serial_streams():
    """asyncio streams on the REPL's stdin/stdout with Ctrl-C disabled."""
    import asyncio

    serial_take()
    return asyncio.StreamReader(sys.stdin.buffer), asyncio.StreamWriter(sys.stdout.buffer, {})


def serial_restore():
    """Ctrl-C interrupts again, so mpremote can stop the app and use the REPL."""
    micropython.kbd_intr(3)


def reset():
    """Hard reset; does not return."""
    machine.reset()


def mem():
    """(free, alloc) heap bytes after a collection."""
    gc.collect()
    return gc.mem_free(), gc.mem_alloc()
