"""Connection collisions (RFC 4271 §6.8): the connection initiated by the higher BGP identifier survives."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bgp.codec.messages import Keepalive, Notification, Open
from bgp.fsm import Established, SessionDown, State
from tests.bgp.fsm.harness import KEEPALIVE, LOCAL_ID, Harness, make_config, notification, peer_open

HIGHER = IPv4Address("10.0.0.9")  # peer identifier above ours (10.0.0.1)
LOWER = IPv4Address("10.0.0.0")
OUT, IN = 1, 2
COLLISION = Notification(6, 7)


def _two_connections_in_open_sent() -> Harness:
    h = Harness().start()
    h.connect(OUT, outgoing=True)
    h.connect(IN, outgoing=False)
    assert h.state() is State.OPEN_SENT
    assert sorted(h.session.connections) == [OUT, IN]
    assert isinstance(h.take_sent(OUT)[0], Open)
    assert isinstance(h.take_sent(IN)[0], Open)
    return h


@pytest.mark.parametrize("open_first_on", [OUT, IN])
def test_open_sent_collision_peer_higher_id_keeps_peer_initiated_connection(open_first_on: int) -> None:
    h = _two_connections_in_open_sent()
    h.feed(open_first_on, peer_open(router_id=HIGHER))
    assert h.take_sent(OUT) == [COLLISION]
    assert h.closed == [OUT]
    assert h.session.connections == (IN,)
    if open_first_on == OUT:
        assert h.state() is State.OPEN_SENT  # IN still waits for its OPEN
        h.feed(IN, peer_open(router_id=HIGHER))
    assert h.state() is State.OPEN_CONFIRM
    h.feed(IN, KEEPALIVE)
    assert h.state() is State.ESTABLISHED


@pytest.mark.parametrize("open_first_on", [OUT, IN])
def test_open_sent_collision_peer_lower_id_keeps_our_connection(open_first_on: int) -> None:
    h = _two_connections_in_open_sent()
    h.feed(open_first_on, peer_open(router_id=LOWER))
    assert h.take_sent(IN) == [COLLISION]
    assert h.closed == [IN]
    assert h.session.connections == (OUT,)
    if open_first_on == IN:
        h.feed(OUT, peer_open(router_id=LOWER))
    h.feed(OUT, KEEPALIVE)
    assert h.state() is State.ESTABLISHED


def test_open_confirm_collision_with_new_connection_from_higher_peer_closes_ours() -> None:
    h = Harness().start()
    h.connect(OUT, outgoing=True)
    h.feed(OUT, peer_open(router_id=HIGHER))
    assert h.state() is State.OPEN_CONFIRM
    h.connect(IN, outgoing=False)
    h.feed(IN, peer_open(router_id=HIGHER))
    assert h.notifications_sent(OUT) == [COLLISION]
    assert h.session.connections == (IN,)
    assert h.transitions()[-2:] == [
        (State.OPEN_CONFIRM, State.OPEN_SENT, "CollisionResolved"),
        (State.OPEN_SENT, State.OPEN_CONFIRM, "OpenReceived"),
    ]


def test_open_confirm_collision_with_new_connection_from_lower_peer_closes_the_new_one() -> None:
    h = Harness().start()
    h.connect(OUT, outgoing=True)
    h.feed(OUT, peer_open(router_id=LOWER))
    h.connect(IN, outgoing=False)
    h.feed(IN, peer_open(router_id=LOWER))
    assert h.notifications_sent(IN) == [COLLISION]
    assert h.closed == [IN]
    assert h.session.connections == (OUT,)
    assert h.state() is State.OPEN_CONFIRM


def test_open_sent_collision_equal_identifiers_higher_asn_wins() -> None:
    # eBGP peers may share an identifier (RFC 6286 §2.3): the peer's AS 65001 beats our 65000.
    h = _two_connections_in_open_sent()
    h.feed(OUT, peer_open(router_id=LOCAL_ID))
    assert h.closed == [OUT]
    assert h.session.connections == (IN,)


def test_open_confirm_keepalive_closes_connection_that_arrived_later() -> None:
    h = Harness().start()
    h.connect(OUT, outgoing=True)
    h.feed(OUT, peer_open(router_id=LOWER))
    h.connect(IN, outgoing=False)
    h.feed(OUT, KEEPALIVE)
    assert h.state() is State.ESTABLISHED
    assert h.notifications_sent(IN) == [COLLISION]
    assert h.session.connections == (OUT,)


def test_established_incoming_connection_refused_with_cease_collision() -> None:
    h = Harness()
    h.establish(OUT, open_bytes=peer_open(graceful_restart=None))
    h.connect(IN, outgoing=False)
    assert h.take_sent(IN) == [COLLISION]  # no OPEN on it
    assert h.closed == [IN]
    assert h.state() is State.ESTABLISHED
    assert h.session.connections == (OUT,)
    assert h.events_of(SessionDown) == []


def test_established_gr_peer_reopens_old_session_ends_as_restart() -> None:
    h = Harness()
    h.establish(OUT, open_bytes=peer_open(router_id=HIGHER))
    h.take_events()
    h.connect(IN, outgoing=False)
    assert isinstance(h.take_sent(IN)[0], Open)
    assert h.state() is State.ESTABLISHED
    h.feed(IN, peer_open(router_id=HIGHER))
    [down] = h.events_of(SessionDown)
    assert down.reason.value == "PeerRestarted"
    assert down.graceful_restart is True
    assert down.notification_sent is None
    assert OUT in h.closed
    assert h.state() is State.OPEN_CONFIRM
    h.feed(IN, KEEPALIVE)
    assert h.state() is State.ESTABLISHED
    assert len(h.events_of(Established)) == 1


def test_open_sent_newer_incoming_connection_replaces_older_one() -> None:
    h = Harness(make_config(passive=True)).start()
    h.connect(IN, outgoing=False)
    h.connect(3, outgoing=False)
    assert h.notifications_sent(IN) == [COLLISION]
    assert h.session.connections == (3,)
    assert h.state() is State.OPEN_SENT


def test_open_sent_peer_closes_collision_loser_waits_in_active_for_its_connection() -> None:
    h = Harness().start()
    h.connect(OUT, outgoing=True)
    h.feed(OUT, notification(6, 7))
    assert h.state() is State.ACTIVE
    h.connect(IN, outgoing=False)
    h.feed(IN, peer_open(router_id=HIGHER), KEEPALIVE)
    assert h.state() is State.ESTABLISHED


def test_open_confirm_keepalive_answered_only_on_the_surviving_connection() -> None:
    h = _two_connections_in_open_sent()
    h.feed(IN, peer_open(router_id=HIGHER))
    assert h.take_sent(IN) == [Keepalive()]
    assert h.take_sent(OUT) == [COLLISION]
