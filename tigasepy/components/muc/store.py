"""The room store of the MUC service (defined with the other stores in ``tigasepy.storage.muc``)."""

from tigasepy.storage.muc import IMucRoomStore, MemoryMucRoomStore, StoredRoom

__all__ = ["IMucRoomStore", "MemoryMucRoomStore", "StoredRoom"]
