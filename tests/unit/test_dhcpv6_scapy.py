"""Every message the requesting router sends, decoded by scapy, matches our decoder."""

from __future__ import annotations

import pytest

from dmanchor.access.dhcpv6 import (
    Dhcp6Message,
    IaPd,
    IaPrefix,
    MsgType,
    PdClient,
    decode,
    duid_ll,
    encode,
)
from dmanchor.wire.types import Prefix

scapy_dhcp6 = pytest.importorskip("scapy.layers.dhcp6")
scapy_inet = pytest.importorskip("scapy.layers.inet")

DUID = duid_ll(bytes.fromhex("02000000002a"))
SERVER = b"\x00\x01\x00\x01kea-server"
P = Prefix.parse("2001:db8:1:1::/64")


def our_messages() -> list[bytes]:
    """Solicit (with hint), Request, Renew, Rebind, Release from the client."""
    c = PdClient(DUID, rapid_commit=False)
    out = []
    c.request(0.0, hint=P)
    (sol, _), = c.datagrams_to_send()
    out.append(sol)
    m = decode(sol)
    adv = Dhcp6Message(MsgType.ADVERTISE, m.xid, DUID, SERVER,
                       (IaPd(1, 30, 48, (IaPrefix(P, 60, 120),)),))
    c.receive(encode(adv), ("fe80::1", 547), 0.1)
    (req, _), = c.datagrams_to_send()
    out.append(req)
    r = decode(req)
    c.receive(encode(Dhcp6Message(MsgType.REPLY, r.xid, DUID, SERVER, adv.ia_pd)),
              ("fe80::1", 547), 0.2)
    c.handle_timer(30.2)
    out.append(c.datagrams_to_send()[0][0])  # Renew
    c.handle_timer(48.2)
    sent = [d for d, _ in c.datagrams_to_send()]
    out.append(next(d for d in sent if decode(d).msg_type is MsgType.REBIND))
    c.release(50.0)
    out.append(c.datagrams_to_send()[-1][0])  # Release
    return out


def scapy_view(data: bytes) -> dict[str, object]:
    udp = scapy_inet.UDP(bytes(scapy_inet.UDP(sport=546, dport=547) / data))
    msg = udp.payload
    view: dict[str, object] = {"type": msg.msgtype, "xid": msg.trid, "prefixes": []}
    opt = msg.payload
    while opt and opt.__class__.__name__ != "NoPayload":
        name = opt.__class__.__name__
        if name == "DHCP6OptClientId":
            view["client_id"] = bytes(opt.duid)
        elif name == "DHCP6OptServerId":
            view["server_id"] = bytes(opt.duid)
        elif name == "DHCP6OptElapsedTime":
            view["elapsed"] = opt.elapsedtime
        elif name == "DHCP6OptRapidCommit":
            view["rapid_commit"] = True
        elif name == "DHCP6OptIA_PD":
            view["iaid"] = opt.iaid
            for sub in opt.iapdopt:
                view["prefixes"].append(  # type: ignore[attr-defined]
                    (str(sub.prefix), sub.plen, sub.preflft, sub.validlft))
        opt = opt.payload
    return view


def our_view(data: bytes) -> dict[str, object]:
    m = decode(data)
    view: dict[str, object] = {"type": int(m.msg_type), "xid": m.xid, "prefixes": [
        (str(p.prefix.address), p.prefix.length, p.preferred, p.valid)
        for ia in m.ia_pd for p in ia.prefixes]}
    if m.client_id is not None:
        view["client_id"] = m.client_id
    if m.server_id is not None:
        view["server_id"] = m.server_id
    if m.elapsed is not None:
        view["elapsed"] = m.elapsed
    if m.rapid_commit:
        view["rapid_commit"] = True
    if m.ia_pd:
        view["iaid"] = m.ia_pd[0].iaid
    return view


@pytest.mark.parametrize("index", range(5), ids=["solicit", "request", "renew", "rebind",
                                                 "release"])
def test_scapy_decodes_what_we_send_identically(index: int) -> None:
    data = our_messages()[index]
    assert scapy_view(data) == our_view(data)
