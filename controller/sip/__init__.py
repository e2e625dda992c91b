"""SIP (RFC 3261): messages, transports, transactions, dialogs."""
