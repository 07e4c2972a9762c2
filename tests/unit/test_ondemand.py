"""On-demand mobility: which source address an application gets."""

from __future__ import annotations

from ipaddress import IPv6Address as A

import pytest

from dmanchor.mn.ondemand import AddressKind, HostAddress, NoAddressError, choose

IP1, IP2 = A("2001:db8:1:1::10"), A("2001:db8:2:1::10")
BEFORE = [HostAddress(IP1, True, 600, 0)]
AFTER = [HostAddress(IP1, False, 600, 0), HostAddress(IP2, True, 600, 1)]


def test_nonpersistent_follows_the_network_the_mn_is_in() -> None:
    assert choose(BEFORE, AddressKind.NONPERSISTENT) == IP1
    assert choose(AFTER, AddressKind.NONPERSISTENT) == IP2


def test_session_lasting_keeps_the_address_across_the_move() -> None:
    first = choose(BEFORE, AddressKind.SESSION_LASTING)
    assert first == IP1
    assert choose(AFTER, AddressKind.SESSION_LASTING, current=first) == IP1
    # A new session after the move starts on the new prefix (draft 4.1.2),
    # not on the previous network's deprecated address.
    assert choose(AFTER, AddressKind.SESSION_LASTING) == IP2
    # Once the old prefix has gone (valid 0), a session-lasting choice moves on.
    gone = [HostAddress(IP1, False, 0, 0), HostAddress(IP2, True, 600, 1)]
    assert choose(gone, AddressKind.SESSION_LASTING, current=IP1) == IP2


def test_no_address_is_a_clear_error() -> None:
    with pytest.raises(NoAddressError, match="not attached"):
        choose([HostAddress(IP1, False, 600, 0)], AddressKind.NONPERSISTENT)
    with pytest.raises(NoAddressError):
        choose([], AddressKind.SESSION_LASTING)
