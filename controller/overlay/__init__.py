"""P2PSIP overlay peer (RELOAD, RFC 6940) on the controller."""
