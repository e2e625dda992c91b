"""Rare work of the board application, loaded for one ``App.task`` and dropped after.

Kept out of ``fw_app`` so that an idle board does not hold its code (heap
budget, issue 6): the configuration pull and the heartbeat of the LAN loops
(``fw_lan``, ``sipmesh.proto.heartbeat``), the Ed25519 key pair of
``keygen``/``provision``, and the CBOR check of a pushed body.
"""

import os

import fw_log


def keypair(seed):
    """(seed, Ed25519 public key, RFC 8032 §5.1.5); a new random seed when seed is None."""
    from sipmesh.proto import ed25519

    seed = seed or os.urandom(32)
    return seed, ed25519.public_key(seed)


def is_cbor(body):
    """Whether body is one well-formed CBOR item (RFC 8949): a push that is not is garbage."""
    from sipmesh.proto import cbor

    try:
        cbor.loads(body)
    except Exception:  # noqa: BLE001 - any undecodable body is garbage
        return False
    return True


async def job(app, key):
    """One pull (returns a configuration to verify, or None) or heartbeat of app.

    The controller's config endpoint is found by mDNS (RFC 6763 §4 browse,
    TXT kid must be the provisioned controller key's), else taken from
    the configuration's controller entry.
    """
    cfg = app.store.config
    import fw_lan

    if key == "pull":
        if app.controller is None and app.mdns is not None:
            import binascii

            import fw_mdns

            kid = binascii.hexlify(app.kid()).decode()
            try:
                for c in await fw_mdns.find("_sipmesh._tcp", 3000, app.ip):
                    if c["txt"].get("kid") == kid:
                        app.controller = c["ip"], c["port"]
            except Exception as e:  # noqa: BLE001 - fall back to the configured address
                fw_log.log("mdns: controller not found: %r" % e)
        if app.controller is None:
            c = cfg["controller"]
            app.controller = c["host"], c["port"]
        return await fw_lan.pull(*app.controller, app.id, app.store.seq)
    if app.controller is None:
        return None
    from sipmesh.proto import heartbeat

    free, alloc = app.board.mem()
    app.hb_n += 1
    body = heartbeat.seal(app.store.identity["hb_key"], {
        "id": app.id, "boot": app.boot, "n": app.hb_n, "cfg": app.store.seq,
        "up": app.uptime(), "ip": app.ip, "free": free, "alloc": alloc,
        "overlay": app.overlay_state,
    })
    status = await fw_lan.post_status(*app.controller, app.id, body)
    if status != 204:
        fw_log.log("heartbeat: controller answered %d" % status)
    return None
