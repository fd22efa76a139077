"""Compatibility routes: the same jobs, answered in other vendors' wire shapes, one module per
vendor API. Each translates to and from the job service (dialer/service.py); none talks to the
store.

- `batch_calling`: the batch-calling API (shared/seeds/get-batch-call-by-id.txt) as the
  official ElevenLabs SDK calls it, under `/v1/convai/batch-calling/` and the seed's
  `/v1/voiceai/batch-calling/{id}`.
- `call_batches`: `GET /api/v1/public/call-batches/{batch_id}/calls`
  (shared/seeds/list-calls-in-batch.txt).
"""

from __future__ import annotations

from aiohttp import web

from api.compat import batch_calling, call_batches
from api.compat.batch_calling import BATCH_STATUS, RECIPIENT_STATUS
from api.compat.call_batches import CALL_STATUS, CALL_STATUS_VALUES
from api.errors import Envelope

__all__ = ["BATCH_STATUS", "CALL_STATUS", "CALL_STATUS_VALUES", "RECIPIENT_STATUS", "setup"]


def setup(app: web.Application, envelopes: list[tuple[str, Envelope]]) -> None:
    """Add every vendor's routes, each answering errors in its vendor's envelope."""
    batch_calling.setup(app, envelopes)
    call_batches.setup(app, envelopes)
