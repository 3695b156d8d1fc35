"""tigasepy: an extensible XMPP server framework built on Twisted."""

__version__ = "0.1.0"
