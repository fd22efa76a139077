"""Typed application and request keys."""

from __future__ import annotations

import asyncio

from aiohttp import web

from dialer.clock import Clock
from dialer.config import Config
from dialer.keys import KeyCache
from dialer.scheduler import Engine
from dialer.service import JobService
from dialer.webhooks import WebhookSender
from storage.store import Store

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
ENGINE = web.AppKey("engine", Engine)
SERVICE = web.AppKey("service", JobService)
CLOCK = web.AppKey("clock", Clock)
KEY_CACHE = web.AppKey("key_cache", KeyCache)
WEBHOOK_SENDER = web.AppKey("webhook_sender", WebhookSender)
# Big request bodies parsed at once (see api.batch.BIG_PARSES).
PARSE_SLOTS = web.AppKey("parse_slots", asyncio.Semaphore)
ORG = web.RequestKey("organization_id", str)  # set by the auth middleware
