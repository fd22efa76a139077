"""The dialing engine: scheduler, state machines, retry policy, intake, telephony providers."""
