"""Multi-User Chat (XEP-0045) as an in-process component, with room archives (XEP-0313)
and self-ping (XEP-0410).

``[components.muc] class = "tigasepy.components.muc:MultiUserChat"``,
``domain = "conference.example.org"``.
"""

from tigasepy.components.muc.room import Room, RoomConfig
from tigasepy.components.muc.service import MucConfig, MultiUserChat
from tigasepy.components.muc.store import IMucRoomStore, MemoryMucRoomStore, StoredRoom

__all__ = ["MultiUserChat", "MucConfig", "Room", "RoomConfig", "IMucRoomStore", "MemoryMucRoomStore",
           "StoredRoom"]
