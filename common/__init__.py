"""Shelf's shared code: the wire protocol and the client library."""

__version__ = "1.0.0"
