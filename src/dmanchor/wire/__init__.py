"""The dmanchor wire protocol: messages, IEs, codec, SM (see docs/protocol.md)."""

from .codec import Flags, Packet, decode, encode, from_json, to_json
from .errors import WireError
from .messages import REGISTRY, Message, MsgType

__all__ = [
    "REGISTRY", "Flags", "Message", "MsgType", "Packet", "WireError",
    "decode", "encode", "from_json", "to_json",
]
