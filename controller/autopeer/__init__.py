"""SIP Auto Peer (RFC 10006 / RFC 9409): capability sets validated, fetched and
mapped to the provider trunk. First step: validation (``validate``)."""
