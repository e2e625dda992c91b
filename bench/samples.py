"""Benchmark documents, importable on CPython and MicroPython alike.

``management_message()``: a typical board management request, about 20
keys with nesting. ``config_document()``: a board configuration of about
4 KB once CBOR-encoded. Both are built by code (no floats, as management
messages carry none) so that both runtimes measure the same bytes.
"""


def management_message():
    return {
        "v": 1,
        "op": "set-config",
        "id": 48213,
        "board": "door-1",
        "kind": "esp32",
        "seq": 77,
        "time": 1795000000,
        "net": {"ssid": "branch-lan", "dhcp": True, "dns": ["192.0.2.53", "192.0.2.54"]},
        "sip": {
            "aor": "sip:door-1@lyon.branch.example",
            "expires": 3600,
            "codecs": ["PCMU", "PCMA"],
            "dtmf": 101,
        },
        "io": [{"pin": 4, "mode": "in", "pull": "up"}, {"pin": 5, "mode": "out"}],
        "led": {"pin": 2, "on": False},
        "log": "info",
        "heartbeat": 30,
        "controller": "ctl-lyon",
        "key": bytes(range(32)),
        "serial": "A4CF12F0E1B2",
        "fw": "0.1.0",
        "flags": [True, False, None],
        "ttl": -1,
    }


def config_document():
    doc = {
        "v": 1,
        "board": "door-1",
        "generation": 12,
        "controller": {
            "name": "ctl-lyon",
            "key": bytes(range(32)),
            "urls": ["https://192.0.2.10:8443/boards", "https://ctl-lyon.local:8443/boards"],
        },
        "net": {"ssid": "branch-lan", "dhcp": True, "ntp": ["192.0.2.1", "192.0.2.2"]},
        "sip": {"aor": "sip:door-1@lyon.branch.example", "expires": 3600, "codecs": ["PCMU"]},
        "contacts": [],
        "io": [],
    }
    for i in range(40):
        doc["contacts"].append({
            "name": "Extension %d" % (200 + i),
            "uri": "sip:%d@lyon.branch.example" % (200 + i),
            "button": i,
            "ring": i % 3 == 0,
            "tags": ["desk", "floor-%d" % (i % 4)],
        })
    for pin in range(12):
        doc["io"].append({"pin": pin, "mode": "in" if pin % 2 else "out", "debounce": 25})
    return doc
