"""BFD authentication (RFC 5880 §6.7): sign what we send, verify what we receive.

One `Authenticator` per session holds bfd.XmitAuthSeq, bfd.RcvAuthSeq and bfd.AuthSeqKnown (§6.8.1).

- Simple Password (§6.7.2): the password travels in clear; Auth Len must be its length + 3.
- Keyed MD5 / SHA1 (§6.7.3, §6.7.4): the key, zero-padded to the digest size, is put where the digest
  goes, the whole packet (Length bytes) is hashed, and the hash replaces the key. A received sequence
  number must lie in [RcvAuthSeq, RcvAuthSeq + 3 x Detect Mult] on the 32-bit circle (meticulous:
  [RcvAuthSeq + 1, ...], so a replayed packet is refused). Meticulous senders increment on every
  packet; non-meticulous ones when the packet's content changes (the RFC's MAY/SHOULD), which keeps
  the receiver's window from being walked past by bursts of identical periodic packets.
- bfd.AuthSeqKnown is cleared once nothing authentic arrived for twice the detection time (§6.8.1),
  so a restarted peer with a fresh sequence number is accepted again.
- Sequence state moves only after the digest has been verified, so a forged packet cannot move the
  window (the RFC text updates it one step earlier; this order is the safe reading).

Failures are `DropReason`s; nothing here raises for received data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from bfd.codec import (
    MD5_DIGEST_LEN,
    SHA1_DIGEST_LEN,
    SIMPLE_PASSWORD_MAX,
    U32_MAX,
    AuthSection,
    AuthType,
    ControlPacket,
    DropReason,
    encode,
)
from bfd.timers import Rng


@dataclasses.dataclass(frozen=True, slots=True)
class AuthConfig:
    """The authentication in use on a session (bfd.AuthType) and its key; the secret is never shown."""

    auth_type: AuthType
    key_id: int
    secret: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 255:
            raise ValueError(f"auth key id {self.key_id} is not 0-255")
        limit = _digest_len(self.auth_type) if self.auth_type.keyed else SIMPLE_PASSWORD_MAX
        if not 1 <= len(self.secret) <= limit:
            raise ValueError(f"{self.auth_type.name} secret must be 1-{limit} bytes (RFC 5880 §4.2-4.4)")


def _digest_len(auth_type: AuthType) -> int:
    if auth_type in (AuthType.KEYED_MD5, AuthType.METICULOUS_KEYED_MD5):
        return MD5_DIGEST_LEN
    return SHA1_DIGEST_LEN


def _digest(auth_type: AuthType, data: bytes) -> bytes:
    if _digest_len(auth_type) == MD5_DIGEST_LEN:
        return hashlib.md5(data).digest()
    return hashlib.sha1(data).digest()


class Authenticator:
    """Per-session authentication state and the §6.7 send and receive procedures."""

    def __init__(self, config: AuthConfig, rng: Rng) -> None:
        self.config = config
        self.xmit_seq = rng.getrandbits(32)  # §6.8.1: bfd.XmitAuthSeq starts at a random value
        self.rcv_seq = 0
        self.seq_known = False
        self._last_accept: float | None = None
        self._last_body: bytes | None = None

    def sign(self, packet: ControlPacket) -> bytes:
        """Return `packet` with our authentication section, ready to send."""
        cfg = self.config
        if not cfg.auth_type.keyed:
            password = AuthSection(cfg.auth_type, cfg.key_id, cfg.secret)
            return encode(dataclasses.replace(packet, auth=password))
        if cfg.auth_type.meticulous:
            sequence = self.xmit_seq
            self.xmit_seq = (self.xmit_seq + 1) & U32_MAX
        else:
            body = encode(dataclasses.replace(packet, auth=None))
            if self._last_body is not None and body != self._last_body:
                self.xmit_seq = (self.xmit_seq + 1) & U32_MAX
            self._last_body = body
            sequence = self.xmit_seq
        size = _digest_len(cfg.auth_type)
        placeholder = cfg.secret.ljust(size, b"\0")
        unsigned = encode(
            dataclasses.replace(packet, auth=AuthSection(cfg.auth_type, cfg.key_id, placeholder, sequence))
        )
        return unsigned[:-size] + _digest(cfg.auth_type, unsigned)

    def verify(self, packet: ControlPacket, now: float, forget_after_s: float | None) -> DropReason | None:
        """§6.7.2-§6.7.4 receive rules; None when the packet is authentic.

        `forget_after_s` is twice the current detection time: after that long without an authentic
        packet bfd.AuthSeqKnown is cleared (§6.8.1).
        """
        cfg = self.config
        auth = packet.auth
        if auth is None:
            return DropReason.AUTH_MISSING
        if auth.auth_type is not cfg.auth_type:
            return DropReason.AUTH_TYPE_MISMATCH
        if auth.key_id != cfg.key_id:
            return DropReason.AUTH_BAD_KEY_ID
        if not cfg.auth_type.keyed:
            if len(auth.data) != len(cfg.secret):
                return DropReason.AUTH_BAD_LENGTH
            if not hmac.compare_digest(auth.data, cfg.secret):
                return DropReason.AUTH_BAD_PASSWORD
            return None
        size = _digest_len(cfg.auth_type)
        if len(auth.data) != size:
            return DropReason.AUTH_BAD_LENGTH
        if (
            self.seq_known
            and forget_after_s is not None
            and self._last_accept is not None
            and now >= self._last_accept + forget_after_s
        ):
            self.seq_known = False
        if self.seq_known and not self._in_window(auth.sequence, packet.detect_mult):
            return DropReason.AUTH_BAD_SEQUENCE
        raw = packet.raw or encode(packet)
        expected = _digest(cfg.auth_type, raw[:-size] + cfg.secret.ljust(size, b"\0"))
        if not hmac.compare_digest(expected, auth.data):
            return DropReason.AUTH_BAD_DIGEST
        self.rcv_seq = auth.sequence
        self.seq_known = True
        self._last_accept = now
        return None

    def _in_window(self, sequence: int, detect_mult: int) -> bool:
        """§6.7.3: within 3 x Detect Mult ahead of bfd.RcvAuthSeq, on the unsigned 32-bit circle."""
        ahead = (sequence - self.rcv_seq) & U32_MAX
        lowest = 1 if self.config.auth_type.meticulous else 0
        return lowest <= ahead <= 3 * detect_mult
