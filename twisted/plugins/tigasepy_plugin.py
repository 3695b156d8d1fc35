"""twistd plugin for tigasepy: ``twistd -n tigasepy``.

Only a ``ServiceMaker``: the options and the service come from ``tigasepy.tap``, loaded
when twistd asks for them. This folder must stay without an ``__init__.py``.
"""

from twisted.application.service import ServiceMaker

tigasepy = ServiceMaker(
    "tigasepy",
    "tigasepy.tap",
    "tigasepy XMPP server (all-in-one: c2s, session manager, storage)",
    "tigasepy",
)
