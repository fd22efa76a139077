"""Telephony providers: one narrow interface, `dial(request) -> result` for a whole call."""

from __future__ import annotations

from dialer.clock import Clock
from dialer.config import Config
from dialer.providers.base import DialRequest, DialResult, Provider, status_for_sip_code


def make_provider(config: Config, clock: Clock) -> Provider:
    """The provider named by `[telephony] provider`."""
    if config.telephony.provider == "simulated":
        from dialer.providers.simulated import SimulatedProvider

        return SimulatedProvider(config.telephony.simulated, clock)
    from dialer.providers.livekit import LiveKitProvider

    return LiveKitProvider(config.telephony.livekit.with_env(), clock)


__all__ = ["DialRequest", "DialResult", "Provider", "make_provider", "status_for_sip_code"]
