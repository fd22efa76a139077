"""The aiohttp API over the engine: /batch routes, compatibility routes, auth, error envelopes."""
