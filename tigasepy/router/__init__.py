"""Routing between the parts of the server by destination domain."""
