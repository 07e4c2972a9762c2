"""The Wireshark dissector decodes every message as the codec does (tshark, Debian).

Every golden vector (one per message type), plain and signed, goes into a
capture as the UDP payload of an IPv6 packet to port 5400; tshark reads it
with the shipped Lua dissector, and each message's type, label, sequence,
flags, every IE (as ``field=JSON``) and the signature's fields must equal
what ``dmanchor decode`` makes of the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest

from dmanchor.wire.codec import Flags, decode, to_json
from dmanchor.wire.dissector import lua
from dmanchor.wire.messages import REGISTRY, Kind, MsgType

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "contrib" / "wireshark" / "dmanchor.lua"
VECTOR_FILES = sorted((ROOT / "tests" / "vectors").glob("*.json"))


def test_the_shipped_dissector_is_the_generated_one() -> None:
    """Regenerate with ``dmanchor dissector -o contrib/wireshark/dmanchor.lua``."""
    assert SHIPPED.read_text() == lua()


def udp6(payload: bytes, sport: int, dport: int = 5400) -> bytes:
    """An IPv6/UDP packet carrying ``payload`` (checksum computed)."""
    src, dst = IPv6Address("fd00::1").packed, IPv6Address("fd00::2").packed
    length = 8 + len(payload)
    body = struct.pack("!HHHH", sport, dport, length, 0) + payload
    data = src + dst + struct.pack("!I3xB", length, 17) + body + b"\0" * (len(body) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    body = body[:6] + struct.pack("!H", (~total & 0xFFFF) or 0xFFFF) + body[8:]
    return struct.pack("!IHBB", 6 << 28, length, 17, 64) + src + dst + body


def write_pcap(path: Path, packets: list[bytes]) -> None:
    """A pcap of raw IPv6 packets (LINKTYPE_RAW), one a second."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for i, pkt in enumerate(packets):
        out.append(struct.pack("<IIII", i, 0, len(pkt), len(pkt)) + pkt)
    path.write_bytes(b"".join(out))


def values(tree: Any, key: str) -> list[Any]:
    """Every value of ``key`` anywhere in tshark's JSON tree, in order."""
    if isinstance(tree, dict):
        out = []
        for k, v in tree.items():
            if k == key:
                out.extend(v if isinstance(v, list) else [v])
            else:
                out.extend(values(v, key))
        return out
    if isinstance(tree, list):
        return [x for item in tree for x in values(item, key)]
    return []


def body_of(layer: dict[str, Any], type_name: str) -> dict[str, Any]:
    """The message body as ``dmanchor decode`` shows it, from the IEs."""
    spec = REGISTRY[int(MsgType[type_name])]
    body: dict[str, Any] = {f.name: [] for f in spec.fields if f.kind is Kind.MANY}
    for item in values(layer, "dmanchor.ie"):
        name, _, text = item.partition("=")
        if isinstance(body.get(name), list):
            body[name].append(json.loads(text))
        else:
            assert name not in body, f"{name} twice"
            body[name] = json.loads(text)
    return body


@pytest.mark.skipif(shutil.which("tshark") is None,
                    reason="needs tshark (Debian package; the Makefile installs it)")
def test_tshark_decodes_every_message_as_the_codec_does(tmp_path: Path) -> None:
    raw = []
    for path in VECTOR_FILES:
        vec = json.loads(path.read_text())
        raw += [bytes.fromhex(vec["hex"]), bytes.fromhex(vec["signed_hex"])]
    write_pcap(tmp_path / "all.pcap", [udp6(r, 40000 + i) for i, r in enumerate(raw)])
    # A home of its own: no personal plugin folder loads a second dissector.
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run(
        ["tshark", "-r", str(tmp_path / "all.pcap"), "-X", f"lua_script:{SHIPPED}",
         "-T", "json", "--no-duplicate-keys", "-J", "dmanchor"],
        capture_output=True, text=True, timeout=120, env=env, check=True)
    frames = json.loads(out.stdout)
    assert len(frames) == len(raw)
    seen = set()
    for data, frame in zip(raw, frames, strict=True):
        layer = frame["_source"]["layers"]["dmanchor"]
        want = to_json(decode(data))
        got_type = values(layer, "dmanchor.type_name")[0]
        seen.add(got_type)
        assert got_type == want["type"]
        assert values(layer, "dmanchor.label") == [want["label"]]
        assert int(values(layer, "dmanchor.seq")[0]) == want["seq"]
        flags = int(values(layer, "dmanchor.flags")[0], 16)
        assert [f.name for f in Flags if f and f & flags] == want["flags"]
        assert body_of(layer, got_type) == want["body"], got_type
        auth = want.get("auth")
        if auth is None:
            assert values(layer, "dmanchor.auth.key_id") == []
        else:
            assert int(values(layer, "dmanchor.auth.key_id")[0]) == auth["key_id"]
            assert int(values(layer, "dmanchor.auth.timestamp_us")[0]) == auth["timestamp_us"]
            assert values(layer, "dmanchor.auth.mac")[0].replace(":", "") == auth["mac"]
    assert seen == {spec.cls.TYPE.name for spec in REGISTRY.values()}  # every message type
