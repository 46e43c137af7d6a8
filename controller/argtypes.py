"""argparse value types shared by the `routeserver` subcommands.

Each returns a parser that turns text into a checked value or raises ArgumentTypeError with a message
naming the option, so every command refuses bad input the same way.

Owns: those parsers. May not touch: anything but argparse and ipaddress.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

IPAddress = IPv4Address | IPv6Address


def int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    """An integer within low..high."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be within {low}..{high}, got {value}")
        return value

    return parse


def seconds_in(low: float, high: float, what: str) -> Callable[[str], float]:
    """A number of seconds within low..high."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number of seconds, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be within {low:g}..{high:g} seconds")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """A number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def address(text: str) -> IPAddress:
    """An IPv4 or IPv6 address."""
    try:
        return ip_address(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def router_id(text: str) -> IPv4Address:
    """A BGP Identifier: a non-zero IPv4 address (RFC 6286)."""
    try:
        value = IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None
    if int(value) == 0:
        raise argparse.ArgumentTypeError("the router ID must not be 0.0.0.0 (RFC 6286)")
    return value


def route_protocol(text: str) -> int:
    """An rtnetlink protocol number of ours: 0-4 are the kernel's (unspec, redirect, kernel, boot, static)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 5 <= number <= 255:
        raise argparse.ArgumentTypeError(f"route protocol {number} is not in 5-255 (0-4 are the kernel's)")
    return number
