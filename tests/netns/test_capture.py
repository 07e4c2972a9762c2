"""A scenario's control traffic, captured (``dmanchor run --pcap``) and read by tshark.

Every message in the capture must decode with the shipped Wireshark
dissector to the same type, label, sequence, flags, IEs and signature as
``dmanchor decode`` makes of the same UDP payload - and the capture must
hold the handover's exchange, each message once (at its sender).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from dmanchor.scenario.run import find, run
from dmanchor.wire.codec import Flags, decode, to_json
from tests.integration.test_dissector import SHIPPED, body_of, values


@pytest.mark.skipif(shutil.which("tshark") is None or shutil.which("dumpcap") is None,
                    reason="needs tshark and dumpcap (Debian; the Makefile installs them)")
def test_a_runs_capture_decodes_message_by_message_as_the_codec_does(tmp_path: Path) -> None:
    pcap = tmp_path / "run.pcapng"
    report = run(find("4.1.2"), tmp_path / "run", quiet=True, pcap=pcap)
    assert report.passed, report.failures
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-X", f"lua_script:{SHIPPED}", "-T", "json",
         "--no-duplicate-keys", "-J", "udp dmanchor"],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "HOME": str(tmp_path)})
    frames = json.loads(out.stdout)
    types: Counter[str] = Counter()
    sent: set[bytes] = set()
    for frame in frames:
        layers = frame["_source"]["layers"]
        payload = bytes.fromhex(layers["udp"]["udp.payload"].replace(":", ""))
        want = to_json(decode(payload))
        layer = layers["dmanchor"]
        got = values(layer, "dmanchor.type_name")[0]
        assert got == want["type"]
        assert int(values(layer, "dmanchor.seq")[0]) == want["seq"]
        flags = int(values(layer, "dmanchor.flags")[0], 16)
        assert [f.name for f in Flags if f and f & flags] == want["flags"]
        assert body_of(layer, got) == want["body"], got
        assert int(values(layer, "dmanchor.auth.key_id")[0]) == want["auth"]["key_id"]
        assert values(layer, "dmanchor.auth.mac")[0].replace(":", "") == want["auth"]["mac"]
        types[got] += 1
        # Once each: a message forwarded by a router is not captured again
        # (a retransmission differs: its flag, its signature's timestamp).
        assert payload not in sent, f"{got} seq {want['seq']} captured twice"
        sent.add(payload)
    # The 4.1.2 handover, as the draft's Fig. 6 has it: LM:1-1, FM:6-2, FM:2.
    for name in ("LOCATION_UPDATE", "MN_QUERY", "MN_REPLY", "BUFFER_READY",
                 "BUFFER_READY_ACK", "FLOW_STATE_TRANSFER", "FLOW_STATE_ACK"):
        assert types[name] >= 1, (name, types)
    assert not list(tmp_path.glob("run/capture-*.pcapng"))  # merged, then removed
