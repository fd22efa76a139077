"""Bounded multipart and form intake: body, part, field and column limits; strict integers."""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import BodyPartReader, FormData

from api.compat import batch_calling as compat
from tests.conftest import NUMBER, ORG, Running, StartApp, make_config, record_threads

BOUNDARY = "xyzBOUNDARYxyz"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


BASE_FIELDS = (part("fromPhoneNumberId", NUMBER.encode()), part("name", b"n"))
CSV = part("file", b"phone\n+12025550101\n", "c.csv")


async def post_multipart(
    running: Running, data: bytes, chunked: bool = False, route: str = "/batch/create"
) -> tuple[int, Any]:
    payload: Any = io.BytesIO(data)
    if chunked:  # no Content-Length: the limit must hold while streaming

        async def stream() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 64 * 1024):
                yield data[i : i + 64 * 1024]

        payload = stream()
    resp = await running.client.post(
        route,
        data=payload,
        headers={
            **running.headers(),
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        },
    )
    return resp.status, await resp.json()


async def job_total(running: Running) -> int:
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG}, headers=running.headers()
    )
    total: int = (await resp.json())["total"]
    return total


async def test_whole_multipart_body_counts_toward_max_body_mb(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Parts that each fit but together pass max_body_mb answer 413 payload_too_large."""
    running = await start_app(make_config(tmp_path, server={"max_body_mb": 1}))
    filler = [part(f"extra{i}", b"x" * 9_000) for i in range(20)]
    big_csv = part("file", b"phone\n+12025550101\n" + b"#" * 900_000, "c.csv")
    data = body(*BASE_FIELDS, *filler, big_csv)
    assert len(data) > 1024 * 1024
    for chunked in (False, True):
        status, answer = await post_multipart(running, data, chunked=chunked)
        assert (status, answer["code"]) == (413, "payload_too_large"), answer
    assert await job_total(running) == 0


async def test_second_file_part_is_refused(running: Running) -> None:
    """Two `file` parts answer 400 too_many_files and create nothing."""
    status, answer = await post_multipart(running, body(*BASE_FIELDS, CSV, CSV))
    assert (status, answer["code"]) == (400, "too_many_files")
    assert await job_total(running) == 0


async def test_more_than_32_parts_is_refused(running: Running) -> None:
    """33 parts answer 400 too_many_parts, however small; 32 are read."""
    many = [part(f"f{i}", b"1") for i in range(31)]
    status, answer = await post_multipart(running, body(*BASE_FIELDS, *many, CSV))
    assert (status, answer["code"]) == (400, "too_many_parts")
    status, answer = await post_multipart(running, body(*BASE_FIELDS, *many[:29], CSV))
    assert (status, answer["code"]) == (400, "validation_error")  # unknown fields, but read
    assert await job_total(running) == 0


async def test_oversized_form_field_is_payload_too_large(running: Running) -> None:
    """A non-file field over 10,000 bytes answers 413 payload_too_large (not file_too_large)."""
    status, answer = await post_multipart(
        running, body(part("fromPhoneNumberId", NUMBER.encode()), part("name", b"n" * 10_001), CSV)
    )
    assert (status, answer["code"]) == (413, "payload_too_large")
    assert "name" in answer["error"]


async def test_form_integers_are_ascii_digits_only(running: Running) -> None:
    """maxAttempts=٣ (an Arabic-Indic three) or +3 is a validation_error; 3 is accepted."""
    for bad in ("٣", "+3", "3_0", "0x3"):
        status, answer = await post_multipart(
            running, body(*BASE_FIELDS, part("maxAttempts", bad.encode()), CSV)
        )
        assert (status, answer["code"]) == (400, "validation_error"), bad
    status, answer = await post_multipart(
        running, body(*BASE_FIELDS, part("maxAttempts", b" 3 "), CSV)
    )
    assert status == 201, answer


async def test_csv_columns_limit_through_the_api(running: Running) -> None:
    """A CSV header of 10,000 columns answers 400 too_many_columns at once."""
    header = ",".join(["phone", *(f"c{i}" for i in range(9_999))]).encode()
    rows = b"\n".join(b"+1202555%04d" % i for i in range(100))
    status, answer = await post_multipart(
        running, body(*BASE_FIELDS, part("file", header + b"\n" + rows, "c.csv"))
    )
    assert (status, answer["code"]) == (400, "too_many_columns")
    assert await job_total(running) == 0


async def test_batch_calling_renders_recipients_off_the_event_loop(
    running: Running, monkeypatch: Any
) -> None:
    """The batch-calling route renders its recipients on another thread than the loop's."""
    created = await running.create_json([{"phone": "+12025550101", "plan": "gold"}])
    threads = record_threads(monkeypatch, compat, "recipients_text")
    resp = await running.client.get(
        f"/v1/voiceai/batch-calling/{created['batchJobId']}", headers=running.headers()
    )
    answer = await resp.json()
    assert resp.status == 200
    assert answer["recipients"][0]["conversation_initiation_client_data"]["dynamic_variables"] == {
        "plan": "gold"
    }
    assert threads and threads[0] is not threading.main_thread()


async def test_form_data_created_by_aiohttp_still_works(running: Running) -> None:
    """An ordinary FormData upload (one file, a few fields) is still created."""
    data = FormData()
    data.add_field("file", io.BytesIO(b"phone\n+12025550101\n"), filename="c.csv")
    data.add_field("fromPhoneNumberId", NUMBER)
    data.add_field("name", "ok")
    resp = await running.client.post("/batch/create", data=data, headers=running.headers())
    assert resp.status == 201, await resp.text()


async def test_batch_calling_streams_every_recipient_page_by_page(
    running: Running, monkeypatch: Any
) -> None:
    """Pages of 3 recipients: all 10 come out in upload order, in one valid JSON document."""
    monkeypatch.setattr(compat, "RECIPIENTS_PAGE", 3)
    contacts = [{"phone": f"+1202555{i:04d}", "i": i} for i in range(10)]
    created = await running.create_json(contacts, scheduledStartTime="2026-06-01T09:00:00Z")
    resp = await running.client.get(
        f"/v1/voiceai/batch-calling/{created['batchJobId']}", headers=running.headers()
    )
    answer = await resp.json()
    assert resp.status == 200
    assert [r["phone_number"] for r in answer["recipients"]] == [c["phone"] for c in contacts]
    assert answer["total_calls_scheduled"] == 10
    assert (answer["retry_count"], answer["status"]) == (0, "pending")


async def test_urlencoded_forms_are_held_to_the_same_limits(running: Running) -> None:
    """Non-UTF-8, too many or too large urlencoded fields answer 4xx, never 500."""
    cases = [
        (b"name=\xed\xa0\x80&fromPhoneNumberId=x", 400, "validation_error"),
        ("&".join(f"f{i}=1" for i in range(33)).encode(), 400, "too_many_parts"),
        (b"name=" + b"n" * 10_001, 413, "payload_too_large"),
        (b"name=a&fromPhoneNumberId=" + NUMBER.encode(), 400, "invalid_csv"),
    ]
    for raw, status, code in cases:
        resp = await running.client.post(
            "/batch/create",
            data=raw,
            headers={**running.headers(), "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (resp.status, (await resp.json())["code"]) == (status, code), raw[:30]


async def test_form_fields_with_odd_encodings_are_refused(running: Running) -> None:
    """A field with an unknown Content-Transfer-Encoding, or compressed (a few bytes could
    unpack to megabytes): 400 validation_error, no job; not a 500."""
    for header in ("Content-Transfer-Encoding: x-foo", "Content-Encoding: gzip"):
        odd = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n{header}\r\n\r\n'
        ).encode() + b"n\r\n"
        status, answer = await post_multipart(running, body(BASE_FIELDS[0], odd, CSV))
        assert (status, answer["code"]) == (400, "validation_error"), (header, answer)
    # The file compressed: it was read as its compressed bytes (and refused as a binary file).
    gzipped = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n'
            "Content-Encoding: gzip\r\n\r\n"
        ).encode()
        + gzip.compress(b"phone\n+12025550101\n")
        + b"\r\n"
    )
    status, answer = await post_multipart(running, body(*BASE_FIELDS, gzipped))
    assert (status, answer["code"]) == (400, "validation_error"), answer
    assert "must not be compressed" in answer["error"]
    assert await job_total(running) == 0


def encoded_file(encoding: str, csv: bytes) -> bytes:
    """The `file` part in a Content-Transfer-Encoding, its bytes encoded in it where known."""
    if encoding == "base64":
        csv = base64.encodebytes(csv)
    elif encoding == "quoted-printable":
        csv = binascii.b2a_qp(csv)
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
        ).encode()
        + csv
        + b"\r\n"
    )


@pytest.mark.parametrize("route", ["/batch/create", "/dnc/import"])
async def test_a_file_in_an_unknown_transfer_encoding_is_refused_intake(
    running: Running, route: str
) -> None:
    """An unknown Content-Transfer-Encoding on the `file` part: 400 validation_error, as on
    a form field, and nothing is created or listed. It was read as it came (201, a job)."""
    fields = BASE_FIELDS if route == "/batch/create" else ()
    for encoding in ("x-foo", "x-uuencode"):
        odd = encoded_file(encoding, b"phone\n+12025550101\n")
        status, answer = await post_multipart(running, body(*fields, odd), route=route)
        assert (status, answer["code"]) == (400, "validation_error"), answer
        assert "'file' cannot be decoded" in answer["error"]
    assert await job_total(running) == 0
    listed = await running.client.get("/dnc", headers=running.headers())
    assert (await listed.json())["total"] == 0


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "binary", "8bit", "7bit"])
async def test_a_file_in_a_known_transfer_encoding_is_decoded_intake(
    running: Running, encoding: str
) -> None:
    """base64 and quoted-printable on the `file` part are decoded, as on a form field (the
    base64 text was read as the CSV: every row invalid); 7bit, 8bit, binary are as sent."""
    csv = b"phone,note\n+12025550101,caf\xc3\xa9 = ok\n+12025550102,x\n"
    status, answer = await post_multipart(running, body(*BASE_FIELDS, encoded_file(encoding, csv)))
    assert status == 201, answer
    detail = await running.detail(answer["batchJobId"])
    contacts = {c["phoneNumber"]: c for c in detail["contacts"]}
    assert sorted(contacts) == ["+12025550101", "+12025550102"]
    assert contacts["+12025550101"]["contactData"]["note"] == "caf\u00e9 = ok"
    status, answer = await post_multipart(
        running, body(encoded_file(encoding, b"phone\n+12025550103\n")), route="/dnc/import"
    )
    assert (status, answer["added"]) == (200, 1), answer


async def test_a_big_base64_file_is_decoded_off_the_event_loop_intake(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base64 file of over 64 KB is decoded in a thread, whole."""
    threads = record_threads(monkeypatch, BodyPartReader, "decode")
    csv = b"phone\n" + b"".join(b"+1202555%04d\n" % i for i in range(6000))
    assert len(base64.encodebytes(csv)) > 64 * 1024
    status, answer = await post_multipart(running, body(*BASE_FIELDS, encoded_file("base64", csv)))
    assert (status, answer["totalContacts"]) == (201, 6000), answer
    assert threads[-1] is not threading.main_thread()  # (the file, the last part)
    assert threads[0] is threading.main_thread()  # (a small field: inline)
