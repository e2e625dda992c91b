"""A minimal board for the serial test: MicroPython on one end of a PTY.

Reads frames from the tty given as argv[1]; answers each REQUEST with a
RESPONSE (same seq) whose CBOR payload is {"echo": <request value>}; a
REQUEST whose value is "stats" is answered with the decoder's counters;
"bye" ends the program. Prints "ready" once the port is open: bytes that
reach the PTY before that are lost. Exits with status 3 after 20 s of
silence.
"""

import select
import sys
import termios

from sipmesh.proto import cbor, frame


def open_raw(path):
    f = open(path, "r+b")
    fd = f.fileno()
    termios.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[6][6] = 0  # VMIN: read() returns what is there
    attrs[6][5] = 0  # VTIME
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return f


def main():
    port = open_raw(sys.argv[1])
    poll = select.poll()
    poll.register(port, select.POLLIN)
    dec = frame.FrameDecoder()
    print("ready")
    while True:
        if not poll.poll(20000):
            sys.exit(3)
        data = port.read(512)
        if not data:
            continue
        for f in dec.feed(data):
            if f.type != frame.REQUEST:
                continue
            value = cbor.loads(f.payload)
            if value == "bye":
                return
            if value == "stats":
                reply = {"delivered": dec.delivered, "dropped": dec.dropped}
            else:
                reply = {"echo": value}
            port.write(frame.encode(frame.RESPONSE, f.seq, cbor.dumps(reply)))


main()
