"""Configuration acceptance of the board application, loaded per call.

``App.provision``, ``App.apply_config`` and ``App.on_push`` run these
functions; the module is imported for the call and dropped when the last
call running ends, so an idle board does not hold their code (heap budget,
issue 6). Every configuration, whatever its path (serial provision/set, LAN
pull, LAN push), ends in ``App._changed``, which re-announces the TXT record
(RFC 6762 §8.4) and wakes the LAN loops. The work that needs CBOR and the
verifier (``fw_store_io``, ``sipmesh.proto.boardcfg``) runs in ``App.task``.
"""

import asyncio

import fw_log


async def provision(app, args):
    """Serial `provision`: identity + first configuration, written atomically."""
    seed = args.get("seed")
    if seed is not None:
        seed, pub = await app.task(app.jobs, "keypair", seed)
    elif app.pending is not None:
        seed, pub = app.pending
    else:
        import fw_agent

        raise fw_agent.error("BAD_REQUEST", "no key: send keygen first or give a seed")
    args["id"] = app.id
    args["seed"] = seed
    args["pub"] = pub
    cose_bytes = args.pop("config")
    try:
        cfg = await app.task(app.store.provision, args, cose_bytes)
    except Exception as e:
        fw_log.log("provision refused: %s" % getattr(e, "reason", e))
        raise
    app.pending = None
    fw_log.log("provisioned, config seq %d" % cfg["seq"])
    app._changed()
    return {"pub": pub, "id": app.id, "cfg": cfg["seq"]}


async def apply(app, cose_bytes, source):
    """Accept a signed configuration from source; return its seq.

    Raises BoardConfigError when refused (logged; the board keeps what it had).
    A check that ran out of heap (a moment of fragmentation) is tried once more.
    """
    for again in (1, 0):
        try:
            cfg = await app.task(app.store.set_config, cose_bytes)
            break
        except Exception as e:
            fw_log.log("config from %s refused: %s" % (source, getattr(e, "reason", e)))
            if not (again and isinstance(e, MemoryError)):
                raise
        await asyncio.sleep_ms(200)
    fw_log.log("config seq %d accepted from %s" % (cfg["seq"], source))
    app._changed()
    return cfg["seq"]


async def on_push(app, body):
    """Push handler: (204, "") accepted, (403, reason) refused, (400, ...) garbage."""
    if app.store.identity is None:
        fw_log.log("push refused: not provisioned")
        return 403, "not provisioned"
    if not await app.task(app.jobs, "is_cbor", body):
        return 400, "body is not CBOR"
    try:
        await apply(app, body, "push")
    except Exception as e:  # noqa: BLE001 - every refusal is one 403 line
        r = getattr(e, "reason", None)
        return (403, r) if r else (500, "internal error")
    return 204, ""
