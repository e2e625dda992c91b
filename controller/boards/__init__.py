"""Boards: the controller's side of the MicroPython boards (virtual and real)."""
