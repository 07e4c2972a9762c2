"""The per-move breakdown of a run, from synthetic traces (no kernel needed)."""

from __future__ import annotations

from typing import Any

from dmanchor.scenario.breakdown import Breakdown, compute, medians

AT = 100.0


def rec(dt_ms: float, node: str, **fields: Any) -> dict[str, Any]:
    return {"t": AT + dt_ms / 1e3, "node": node, **fields}


MOVE = {"mn": "mn", "old": "ar1", "new": "ar2", "at": AT, "left": AT - 0.0004,
        "previous": ["2001:db8:1:1::/64"]}
RECORDS = [
    rec(-50, "ar1", fn="lift", prefix="2001:db8:1:1::/64", waited_ms=1.0),  # an earlier move's
    rec(-1, "ar1", fn="dataplane", add=[{"kind": "BUFFER", "prefix": "2001:db8:1:1::/64"}]),
    rec(1.1, "ar2", fn="dataplane", add=[{"kind": "ANCHOR", "prefix": "2001:db8:2:1::/64",
                                          "link": "mn"}]),
    rec(1.5, "ar2", fn="anchor", dir="tx", type="MN_QUERY"),
    rec(2.9, "ar2", fn="anchor", dir="rx", type="MN_REPLY"),
    rec(3.0, "ar2", fn="dataplane", add=[{"kind": "TUNNEL", "prefix": "2001:db8:1:1::/64",
                                          "next_hop": "fc00::1:0", "flow": "x"}]),
    rec(4.3, "ar1", fn="dataplane", add=[{"kind": "TUNNEL", "prefix": "2001:db8:1:1::/64",
                                          "next_hop": "fc00::2:1"}]),
    rec(8.2, "ar1", fn="lift", prefix="2001:db8:1:1::/64", waited_ms=3.7),
    rec(9.0, "ar2", fn="lift", prefix="2001:db8:9:9::/64", waited_ms=1.0),  # not its prefix
    rec(2000, "ar1", fn="lift", prefix="2001:db8:1:1::/64", waited_ms=1.0),  # long after
]


def test_each_phase_is_read_from_the_nodes_records() -> None:
    arrivals = {"mn": [AT - 0.01, AT + 0.0069, AT + 0.007]}
    first_attach = {**MOVE, "old": None}
    [b] = compute(RECORDS, [first_attach, MOVE], arrivals)
    assert b == Breakdown("mn", "ar1->ar2", radio=0.4, attach=1.1, lm=2.9, fm=4.3, lift=8.2,
                          lift_took=3.7, first=6.9)
    assert b.line() == ("mn ar1->ar2: radio gap 0.4 ms | attach +1.1 | LM +2.9 | FM +4.3 | "
                        "lift +8.2 (took 3.7 ms) | first packet +6.9")


def test_a_predictive_moves_hi_is_read_from_before_the_radio() -> None:
    hi = rec(-1.2, "ar1", fn="anchor", dir="tx", type="HANDOVER_INITIATE")
    older = rec(-30, "ar1", fn="anchor", dir="tx", type="HANDOVER_INITIATE")  # another move's
    [b] = compute([older, hi, *RECORDS], [{**MOVE, "left": AT - 0.0015}], {})
    assert b.hi == -1.2
    assert b.line().startswith("mn ar1->ar2: radio gap 1.5 ms | HI -1.2 | attach +1.1 |")
    [plain] = compute(RECORDS, [MOVE], {})
    assert plain.hi is None and "HI" not in plain.line()


def test_a_move_ends_at_its_mns_next_move_and_missing_phases_are_left_out() -> None:
    back = {**MOVE, "old": "ar2", "new": "ar1", "at": AT + 0.005, "left": None, "previous": []}
    first, second = compute(RECORDS, [MOVE, back], {})
    assert first.lift is None and first.first is None  # its lift came after the next move
    assert second.radio is None and second.lift is None
    assert "lift" not in first.line() and "first packet" not in first.line()
    assert medians([first, second])["attach"] == first.attach
