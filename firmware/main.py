"""/main.py of every board: take the serial line, then run the sipmesh board application.

The line is taken first (``board.serial_take``): a management request that
arrives while the application loads would otherwise meet a line where a
frame's 0x03 byte is Ctrl-C, and the board would stop at the REPL.
"""

import board

board.serial_take()

import fw_app  # noqa: E402 - after the line is taken

fw_app.main()
