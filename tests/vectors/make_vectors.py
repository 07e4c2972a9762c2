"""Write tests/vectors/<TYPE>.json from tests/examples.py.

Run once when a message type is added; a changed vector is a wire change
and must be reviewed as such.  ``--check`` only reports differences.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dmanchor.wire import Packet, decode, encode, to_json
from dmanchor.wire.auth import receiver_id
from tests.examples import EXAMPLES

HERE = Path(__file__).parent
KEY_ID, SECRET, TS = 7, bytes(range(32)), 1_800_000_000_000_000
RECEIVER = ("2001:db8::10", 4800)
"""Where the signed vectors are addressed (the MAC covers it, the bytes do not)."""


def vector(msg: object, seq: int) -> dict[str, object]:
    from dmanchor.wire.messages import Message

    assert isinstance(msg, Message)
    plain = encode(msg, seq)
    signed = encode(msg, seq, key_id=KEY_ID, secret=SECRET, timestamp_us=TS,
                    receiver=receiver_id(RECEIVER))
    return {
        "hex": plain.hex(),
        "json": to_json(Packet(msg, seq)),
        "receiver": f"[{RECEIVER[0]}]:{RECEIVER[1]}",
        "signed_hex": signed.hex(),
        "signed_json": to_json(decode(signed)),
    }


def main() -> int:
    check = "--check" in sys.argv
    bad = 0
    for i, msg in enumerate(EXAMPLES, start=1):
        path = HERE / f"{msg.TYPE.name.lower()}.json"
        text = json.dumps(vector(msg, 1000 + i), indent=2) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                print(f"differs: {path.name}")
                bad += 1
        else:
            path.write_text(text)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
