"""BFD authentication (RFC 5880 §6.7): every type end to end, every failure with its drop reason."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from bfd.auth import AuthConfig, Authenticator
from bfd.codec import AuthType, ControlPacket, DropReason, State, decode
from bfd.session import Session, SessionConfig
from tests.bfd.support import StubRng, VirtualNetwork, peer_packet, sent

KEYED = [t for t in AuthType if t.keyed]
SECRETS = {
    AuthType.SIMPLE_PASSWORD: b"hunter2",
    AuthType.KEYED_MD5: b"md5-secret",
    AuthType.METICULOUS_KEYED_MD5: b"md5-meticulous",
    AuthType.KEYED_SHA1: b"sha1-secret-20-bytes",
    AuthType.METICULOUS_KEYED_SHA1: b"sha1-meticulous",
}
LOCAL = 0x1000


def config(auth_type: AuthType, key_id: int = 1, secret: bytes | None = None) -> AuthConfig:
    return AuthConfig(auth_type, key_id, SECRETS[auth_type] if secret is None else secret)


def auth_session(auth: AuthConfig | None) -> Session:
    session = Session(SessionConfig(local_discr=LOCAL, auth=auth), random.Random(1), 0.0)
    sent(session)
    return session


def signed(auth: AuthConfig, packet: ControlPacket, sequence: int = 1000) -> ControlPacket:
    """The packet as a peer with `auth` would send it, first sequence number `sequence`."""
    return decode(Authenticator(auth, StubRng(bits=(sequence,))).sign(packet))


def from_peer(session: Session) -> ControlPacket:
    return peer_packet(session, State.DOWN)


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_authenticated_sessions_come_up_and_stay_up(auth_type: AuthType) -> None:
    net = VirtualNetwork.pair(
        SessionConfig(local_discr=0xA, auth=config(auth_type)),
        SessionConfig(local_discr=0xB, auth=config(auth_type)),
    )
    net.run_until_up()
    net.run_until(net.now + 10.0)
    assert len(net.events) == 4
    assert all(s.packet.auth is not None and s.packet.auth.auth_type is auth_type for s in net.log)
    for session in net.sessions:
        assert session.counters.drops == {}
    if auth_type.meticulous:
        sequences = [s.packet.auth.sequence for s in net.sent_by(0) if s.packet.auth]
        assert all((b - a) % 2**32 == 1 for a, b in itertools.pairwise(sequences))


@pytest.mark.parametrize("auth_type", KEYED)
def test_digest_covers_the_whole_packet(auth_type: AuthType) -> None:
    """Golden check against a hand computation of §6.7.3/§6.7.4: key in the digest field, hash, replace."""
    cfg = AuthConfig(auth_type, 2, b"key")
    packet = ControlPacket(
        state=State.UP, my_discr=1, your_discr=2, desired_min_tx_us=300_000, required_min_rx_us=300_000
    )
    wire = Authenticator(cfg, StubRng(bits=(0x01020304,))).sign(packet)
    size, algo = (16, hashlib.md5) if auth_type.section_len == 24 else (20, hashlib.sha1)
    length = 24 + 8 + size
    header = bytes([0x20, 0xC4, 3, length]) + bytes.fromhex("00000001 00000002 000493e0 000493e0 00000000")
    section = bytes([auth_type, 8 + size, 2, 0]) + bytes.fromhex("01020304")
    assert wire == header + section + algo(header + section + b"key".ljust(size, b"\0")).digest()


def test_simple_password_golden() -> None:
    wire = Authenticator(AuthConfig(AuthType.SIMPLE_PASSWORD, 5, b"pw"), StubRng()).sign(
        ControlPacket(state=State.DOWN, my_discr=1)
    )
    assert wire[1] & 0x04
    assert wire[3] == 29
    assert wire[24:] == b"\x01\x05\x05pw"


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_good_packet_is_accepted(auth_type: AuthType) -> None:
    session = auth_session(config(auth_type))
    assert session.handle_packet(signed(config(auth_type), from_peer(session)), 1.0) is None
    assert session.state is State.INIT


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_wrong_key_is_refused(auth_type: AuthType) -> None:
    session = auth_session(config(auth_type))
    secret = bytes(reversed(SECRETS[auth_type]))  # same length, different bytes
    packet = signed(config(auth_type, secret=secret), from_peer(session))
    expected = DropReason.AUTH_BAD_DIGEST if auth_type.keyed else DropReason.AUTH_BAD_PASSWORD
    assert session.handle_packet(packet, 1.0) is expected
    assert session.state is State.DOWN
    assert session.remote_discr == 0  # nothing from a refused packet is taken over
    assert session.counters.drops == {expected: 1}


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_wrong_key_id_is_refused(auth_type: AuthType) -> None:
    session = auth_session(config(auth_type, key_id=1))
    packet = signed(config(auth_type, key_id=2), from_peer(session))
    assert session.handle_packet(packet, 1.0) is DropReason.AUTH_BAD_KEY_ID


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_wrong_auth_type_is_refused(auth_type: AuthType) -> None:
    session = auth_session(config(auth_type))
    other = AuthType(auth_type % 5 + 1)
    packet = signed(config(other, secret=SECRETS[auth_type][:16]), from_peer(session))
    assert session.handle_packet(packet, 1.0) is DropReason.AUTH_TYPE_MISMATCH


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_missing_auth_is_refused(auth_type: AuthType) -> None:
    session = auth_session(config(auth_type))
    assert session.handle_packet(from_peer(session), 1.0) is DropReason.AUTH_MISSING  # §6.8.6 step 11


@pytest.mark.parametrize("auth_type", list(AuthType))
def test_unexpected_auth_is_refused(auth_type: AuthType) -> None:
    session = auth_session(None)
    packet = signed(config(auth_type), from_peer(session))
    assert session.handle_packet(packet, 1.0) is DropReason.AUTH_UNEXPECTED  # §6.8.6 step 10


def test_simple_password_of_another_length_is_refused() -> None:
    session = auth_session(config(AuthType.SIMPLE_PASSWORD))
    packet = signed(config(AuthType.SIMPLE_PASSWORD, secret=b"hunter22"), from_peer(session))
    assert session.handle_packet(packet, 1.0) is DropReason.AUTH_BAD_LENGTH


@pytest.mark.parametrize("auth_type", KEYED)
def test_tampered_packet_is_refused(auth_type: AuthType) -> None:
    session = auth_session(config(auth_type))
    wire = bytearray(signed(config(auth_type), from_peer(session)).raw)
    wire[2] = 4  # a different Detect Mult under the same digest
    assert session.handle_packet(decode(bytes(wire)), 1.0) is DropReason.AUTH_BAD_DIGEST


@pytest.mark.parametrize("auth_type", KEYED)
def test_replay(auth_type: AuthType) -> None:
    """Meticulous types refuse a repeated sequence number; the others accept it (§6.7.3)."""
    session = auth_session(config(auth_type))
    packet = signed(config(auth_type), from_peer(session))
    assert session.handle_packet(packet, 1.0) is None
    replay = session.handle_packet(packet, 1.1)
    assert replay is (DropReason.AUTH_BAD_SEQUENCE if auth_type.meticulous else None)


@pytest.mark.parametrize("auth_type", KEYED)
@pytest.mark.parametrize(
    ("offset", "accepted_plain", "accepted_meticulous"),
    [
        (-1, False, False),
        (0, True, False),
        (1, True, True),
        (9, True, True),  # 3 x Detect Mult (3) ahead: the edge of the window
        (10, False, False),
        (2**31, False, False),
    ],
)
def test_sequence_window(
    auth_type: AuthType, offset: int, accepted_plain: bool, accepted_meticulous: bool
) -> None:
    session = auth_session(config(auth_type))
    base = 0xFFFFFFFE  # the window wraps around 2^32
    assert session.handle_packet(signed(config(auth_type), from_peer(session), base), 1.0) is None
    later = signed(config(auth_type), from_peer(session), (base + offset) % 2**32)
    accepted = accepted_meticulous if auth_type.meticulous else accepted_plain
    assert session.handle_packet(later, 1.1) is (None if accepted else DropReason.AUTH_BAD_SEQUENCE)


@pytest.mark.parametrize("auth_type", KEYED)
def test_forged_packet_does_not_move_the_window(auth_type: AuthType) -> None:
    session = auth_session(config(auth_type))
    assert session.handle_packet(signed(config(auth_type), from_peer(session), 100), 1.0) is None
    forged = signed(config(auth_type, secret=b"guess"), from_peer(session), 108)
    assert session.handle_packet(forged, 1.1) is DropReason.AUTH_BAD_DIGEST
    assert session.handle_packet(signed(config(auth_type), from_peer(session), 101), 1.2) is None


@pytest.mark.parametrize("auth_type", KEYED)
def test_sequence_is_forgotten_after_twice_the_detection_time(auth_type: AuthType) -> None:
    """§6.8.1: a restarted peer with a fresh, lower sequence number is accepted again."""
    session = auth_session(config(auth_type))
    assert session.handle_packet(signed(config(auth_type), from_peer(session), 5000), 1.0) is None
    assert session.detection_time_us == 900_000
    restarted = signed(config(auth_type), from_peer(session), 7)
    assert session.handle_packet(restarted, 1.0 + 1.8 - 1e-6) is DropReason.AUTH_BAD_SEQUENCE
    assert session.handle_packet(restarted, 1.0 + 1.8) is None


def test_keyed_sequence_advances_only_when_the_content_changes() -> None:
    signer = Authenticator(config(AuthType.KEYED_SHA1), StubRng(bits=(50,)))
    down = ControlPacket(state=State.DOWN, my_discr=1)
    sequences = [decode(signer.sign(p)).auth.sequence for p in (down, down, down)]  # type: ignore[union-attr]
    init = ControlPacket(state=State.INIT, my_discr=1, your_discr=2)
    sequences += [decode(signer.sign(p)).auth.sequence for p in (init, init)]  # type: ignore[union-attr]
    assert sequences == [50, 50, 50, 51, 51]


def test_meticulous_sequence_advances_on_every_packet_and_wraps() -> None:
    signer = Authenticator(config(AuthType.METICULOUS_KEYED_MD5), StubRng(bits=(2**32 - 2,)))
    down = ControlPacket(state=State.DOWN, my_discr=1)
    sequences = [decode(signer.sign(down)).auth.sequence for _ in range(4)]  # type: ignore[union-attr]
    assert sequences == [2**32 - 2, 2**32 - 1, 0, 1]


def test_transmit_sequence_starts_random() -> None:
    starts = {Authenticator(config(AuthType.KEYED_MD5), random.Random(seed)).xmit_seq for seed in range(20)}
    assert len(starts) == 20


@pytest.mark.parametrize(
    ("auth_type", "secret", "key_id"),
    [
        (AuthType.SIMPLE_PASSWORD, b"", 1),
        (AuthType.SIMPLE_PASSWORD, b"x" * 17, 1),
        (AuthType.KEYED_MD5, b"x" * 17, 1),
        (AuthType.METICULOUS_KEYED_SHA1, b"x" * 21, 1),
        (AuthType.KEYED_SHA1, b"x", 256),
        (AuthType.KEYED_SHA1, b"x", -1),
    ],
)
def test_auth_config_is_validated(auth_type: AuthType, secret: bytes, key_id: int) -> None:
    with pytest.raises(ValueError):
        AuthConfig(auth_type, key_id, secret)


def test_secret_is_not_in_repr() -> None:
    assert "hunter2" not in repr(config(AuthType.SIMPLE_PASSWORD))
    assert "hunter2" not in repr(SessionConfig(local_discr=1, auth=config(AuthType.SIMPLE_PASSWORD)))
