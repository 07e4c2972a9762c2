"""Hypothesis strategies for every IE value and message type."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any

from hypothesis import strategies as st

from dmanchor.wire.ie import IE
from dmanchor.wire.messages import REGISTRY, Kind, Message
from dmanchor.wire.types import (
    Cause,
    DpState,
    EntryKind,
    FlowFilter,
    FlowState,
    ForwardingEntry,
    Load,
    MnBinding,
    Prefix,
    Status,
)

addresses = st.integers(0, (1 << 128) - 1).map(IPv6Address)


@st.composite
def prefixes(draw: st.DrawFn) -> Prefix:
    length = draw(st.integers(0, 128))
    value = draw(st.integers(0, (1 << 128) - 1))
    mask = ((1 << 128) - 1) ^ ((1 << (128 - length)) - 1)
    return Prefix(value & mask, length)


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
names = st.text(min_size=1, max_size=16).filter(lambda s: 1 <= len(s.encode()) <= 64)
flows = st.builds(FlowFilter, prefixes(), prefixes(), st.integers(0, 255), u16, u16)
states = st.builds(
    FlowState, flows, st.integers(0, 255), u64, u64, u64, u64, st.binary(max_size=32)
)
links = st.text(
    alphabet=st.characters(min_codepoint=48, max_codepoint=122), max_size=15
)
entries = st.builds(
    ForwardingEntry, st.sampled_from(EntryKind), prefixes(),
    st.none() | addresses, st.none() | flows, links, u16,
)
statuses = st.builds(
    Status, st.sampled_from(Cause),
    st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255),
)
loads = st.builds(Load, st.booleans(), st.integers(0, 100))
dp_states = st.builds(DpState, *(u32 for _ in DpState._fields))
bindings = st.builds(MnBinding, prefixes(), addresses, u32, u32)

VALUES: dict[IE, st.SearchStrategy[Any]] = {
    IE.PREFIX: prefixes(),
    IE.FORWARDING_ADDRESS: addresses,
    IE.DPA_ADDRESS: addresses,
    IE.CPA_ADDRESS: addresses,
    IE.LMS_ADDRESS: addresses,
    IE.FM_ADDRESS: addresses,
    IE.LIFETIME: u32,
    IE.STATUS: statuses,
    IE.LOAD: loads,
    IE.DP_STATE: dp_states,
    IE.NODE_ID: names,
    IE.FLOW: flows,
    IE.FLOW_STATE: states,
    IE.ENTRY_ADD: entries,
    IE.ENTRY_DELETE: entries,
    IE.BUFFER_LIMIT: u32,
    IE.TIMEOUT_MS: u32,
    IE.COUNT: u64,
    IE.ORIGIN: names,
    IE.MN_ID: names,
    IE.BINDING: bindings,
    IE.TRANSFER_ID: u64,
}


def message_strategy(code: int) -> st.SearchStrategy[Message]:
    """Arbitrary valid messages of one type."""
    spec = REGISTRY[code]
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for f in spec.fields:
        base = VALUES[f.code]
        if f.kind is Kind.MANY:
            kwargs[f.name] = st.lists(base, max_size=5).map(tuple)
        elif f.kind is Kind.OPTIONAL:
            kwargs[f.name] = st.none() | base
        else:
            kwargs[f.name] = base
    return st.builds(spec.cls, **kwargs)


messages = st.sampled_from(sorted(REGISTRY)).flatmap(message_strategy)
