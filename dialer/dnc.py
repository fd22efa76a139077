"""Do-not-call lists: one per organization, numbers in E.164, for the API and the CLI.

Listing a number cancels its waiting contacts in every job of the organization (do_not_call) in
the same transaction, and claims never take a listed number, so a number listed while its job
runs is never dialed again.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from dialer import intake
from dialer.service import ServiceError
from storage.store import Store

log = structlog.get_logger("dialer.dnc")

MAX_NUMBERS = 10_000
SOURCES = ("api", "import", "cli")


@dataclass(frozen=True, slots=True)
class Added:
    added: int
    already_listed: int
    jobs: list[str]  # jobs whose waiting contacts were cancelled


def invalid_numbers(numbers: Sequence[Any]) -> list[dict[str, Any]]:
    """The entries that are not E.164 numbers, with their index and why."""
    bad: list[dict[str, Any]] = []
    for index, number in enumerate(numbers):
        problem = intake.e164_problem(number) if isinstance(number, str) else "not a string"
        if problem:
            bad.append({"index": index, "value": str(number)[:64], "reason": problem})
    return bad


async def add(
    store: Store,
    organization_id: str,
    numbers: Sequence[str],
    reason: str | None,
    source: str,
    now: float,
) -> Added:
    """List numbers; all must be valid E.164 (else 400 invalid_numbers, nothing listed)."""
    if not numbers:
        raise ServiceError(400, "validation_error", "'numbers' must list at least one number")
    if len(numbers) > MAX_NUMBERS:
        raise ServiceError(400, "validation_error", f"more than {MAX_NUMBERS} numbers")
    bad = invalid_numbers(numbers)
    if bad:
        raise ServiceError(
            400,
            "invalid_numbers",
            f"{len(bad)} number(s) are not valid E.164 numbers: "
            + ", ".join(repr(b["value"]) for b in bad[:10]),
            {"invalidNumbers": bad[: intake.MAX_REPORTED_INVALID]},
        )
    unique = list(dict.fromkeys(listed_form(n) for n in numbers))
    added, jobs = await store.dnc_add(organization_id, unique, reason, source, now)
    return Added(added=added, already_listed=len(unique) - added, jobs=jobs)


async def import_csv(
    store: Store,
    organization_id: str,
    data: bytes,
    reason: str | None,
    now: float,
    phone_column: str | None = None,
    default_country: str | None = None,
    listed: Callable[[list[str]], None] | None = None,
) -> tuple[Added, intake.ParsedContacts]:
    """List the numbers of a CSV's phone column (`phone_column`, else found as for a job's
    CSV; national numbers read as dialed from `default_country`); rows whose number is invalid
    are skipped and reported. Other columns are not read: an opt-out is never dropped for
    what they hold.

    Up to intake.MAX_NUMBERS numbers a file (it was MAX_NUMBERS, as for `add`). The file is read
    off the event loop (10,000 formatted numbers held it 0.23 s), and listed MAX_NUMBERS at a
    time, each in its own transaction, so that calls ending meanwhile are recorded between
    them; `listed` is called after each with the jobs whose waiting contacts it cancelled. A
    storage failure part way leaves the numbers of the transactions done listed (and their
    contacts cancelled): the import answers 503, and sent again lists the rest, the others
    counted as already listed."""
    parsed = await asyncio.to_thread(
        intake.parse_csv,
        data,
        default_country=default_country,
        phone_column=phone_column,
        numbers_only=True,
    )
    numbers = [phone for phone, _ in parsed.contacts]
    added = 0
    jobs: set[str] = set()
    for start in range(0, len(numbers), MAX_NUMBERS):
        chunk = numbers[start : start + MAX_NUMBERS]
        chunk_added, chunk_jobs = await store.dnc_add(organization_id, chunk, reason, "import", now)
        added += chunk_added
        jobs.update(chunk_jobs)
        if listed is not None:
            listed(chunk_jobs)
    return Added(added=added, already_listed=len(numbers) - added, jobs=sorted(jobs)), parsed


def listed_form(number: str) -> str:
    """The spelling a number is listed and looked up under: its canonical E.164 (see
    intake.canonical_e164), or the text as given when it is no valid number."""
    return intake.canonical_e164(number)[0] or number


def lookup_form(given: str) -> str:
    """The spelling to look up a number given in a query string under (see listed_form): a
    `+` sent unencoded arrives decoded as a space (`?number=+4420...` reads ` 4420...`), and
    is read as the `+`; a number formatted as people write it (`+44 20 7946 0001`) is read
    without its spaces and punctuation. Either was looked up as written and said not listed."""
    text = given.strip()
    if given[:1].isspace() and text[:1] in _DIGITS:
        text = "+" + text
    found = intake.canonical_e164(text)[0] or intake.formatted_international(text)
    return found or text


_DIGITS = frozenset("0123456789")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def number_to_find(given: str) -> str:
    """A number given to look up or take off the list, in its listed spelling (see
    lookup_form); 400 invalid_numbers when it is no E.164 number, even read as people write
    them (`12125557030`, `020 7946 0001`, blank): looked up as given it would match nothing and
    be said not listed, when the number may well be listed with its `+` and country code."""
    number = lookup_form(given)
    if not _E164.fullmatch(number):
        raise ServiceError(
            400,
            "invalid_numbers",
            f"{given.strip()[:64]!r} is not a phone number in E.164 (a + and the country code)",
        )
    return number


async def remove(store: Store, organization_id: str, given: str) -> str:
    """Take a number off the list (404 not_listed when it is not on it); return it as listed."""
    number = number_to_find(given)
    if not await store.dnc_remove(organization_id, number):
        raise ServiceError(
            404, "not_listed", f"{number!r} is not on this organization's do-not-call list"
        )
    return number


async def respell_stored_numbers(store: Store) -> None:
    """Once after the upgrade that made strict E.164 canonical (migration 0016): contacts still
    to be dialed and listed numbers stored under another spelling of the same number take the
    canonical one too, so a listing under either spelling stops the call."""
    respelled, listed = await store.canonical_phones(lambda n: intake.canonical_e164(n)[0])
    if respelled or listed:
        log.warning("numbers_respelled", contacts=respelled, do_not_call_listings_added=listed)
