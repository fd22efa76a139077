"""Contact intake: parse CSV or JSON contact lists and validate E.164 numbers."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from dialer import windows

MAX_CONTACTS = 10_000
MAX_CSV_BYTES = 10 * 1024 * 1024
MAX_REPORTED_INVALID = 100
MAX_FIELD_CHARS = 10_000

# ASCII digits only and a full match: `\d` would accept other scripts' digits and `$` a trailing
# newline, and either would reach the carrier as the number to dial.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


class IntakeError(Exception):
    """The contact list cannot be used at all."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True, slots=True)
class InvalidRow:
    row: int  # CSV: 1-based line of the data row counting the header as row 1; JSON: index
    value: str
    reason: str


@dataclass
class ParsedContacts:
    contacts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    invalid_count: int = 0
    duplicates: int = 0


def e164_problem(value: str) -> str | None:
    """Why `value` is not a valid E.164 number, or None if it is."""
    if not _E164.fullmatch(value):
        return "not in E.164 format (+ then 2 to 15 digits, no spaces or punctuation)"
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return "not a phone number"
    if not phonenumbers.is_valid_number(parsed):
        return "not a valid number for its country code"
    return None


def parse_csv(data: bytes) -> ParsedContacts:
    """Parse a CSV upload. Invalid rows are skipped and reported; duplicates dropped and counted."""
    if len(data) > MAX_CSV_BYTES:
        raise IntakeError("file_too_large", "CSV file is larger than 10 MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise IntakeError("invalid_csv", "CSV file is not valid UTF-8") from None
    if "\x00" in text:
        raise IntakeError("invalid_csv", "CSV file contains NUL bytes (is it a binary file?)")
    if not text.strip():
        raise IntakeError("invalid_csv", "CSV file is empty")
    first_line = next((line for line in text.splitlines() if line.strip(" \t,;")), "")
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        while not any(cell.strip() for cell in header):  # blank lines before the header
            header = next(reader)
    except csv.Error as exc:
        raise IntakeError("invalid_csv", f"CSV header cannot be read: {exc}") from None
    except StopIteration:
        raise IntakeError("invalid_csv", "CSV has no header row") from None
    columns = [h.strip() for h in header]
    phone_index = next((i for i, c in enumerate(columns) if c.lower() == "phone"), None)
    # The recipient's own IANA zone (optional): wins over the zones of the number.
    tz_index = next((i for i, c in enumerate(columns) if c.lower() == "timezone"), None)
    if phone_index is None:
        raise IntakeError("missing_phone_column", "CSV has no 'phone' column")
    if len({c for c in columns if c}) != len([c for c in columns if c]):
        raise IntakeError("invalid_csv", "CSV header has duplicate column names")

    result = ParsedContacts()
    seen: set[str] = set()
    rows = 0
    try:
        for line_no, record in enumerate(reader, start=2):
            if not record or all(not cell.strip() for cell in record):
                continue
            rows += 1
            if rows > MAX_CONTACTS:
                raise IntakeError("too_many_contacts", f"CSV has more than {MAX_CONTACTS} contacts")
            if len(record) > len(columns):
                _invalid(result, line_no, "", "row has more fields than the header")
                continue
            phone = record[phone_index].strip() if phone_index < len(record) else ""
            problem = e164_problem(phone)
            if problem:
                _invalid(result, line_no, phone, problem)
                continue
            zone = (
                record[tz_index].strip() if tz_index is not None and tz_index < len(record) else ""
            )
            if zone and not windows.valid_zone(zone):
                _invalid(result, line_no, zone, "timezone is not a known IANA time zone")
                continue
            if phone in seen:
                result.duplicates += 1
                continue
            seen.add(phone)
            fields: dict[str, Any] = {}
            for i, column in enumerate(columns):
                if not column:
                    continue
                value = record[i].strip() if i < len(record) else ""
                name = "phone" if i == phone_index else "timezone" if i == tz_index else column
                fields[name] = value[:MAX_FIELD_CHARS]
            fields["phone"] = phone
            result.contacts.append((phone, fields))
    except csv.Error as exc:
        raise IntakeError("invalid_csv", f"CSV is malformed: {exc}") from None
    if not result.contacts:
        raise IntakeError(
            "no_valid_contacts",
            "CSV contains no valid phone numbers",
            _invalid_details(result),
        )
    return result


def parse_json_contacts(items: list[Any]) -> ParsedContacts:
    """Validate JSON contacts: any invalid phone rejects the whole list (naming the indexes)."""
    if len(items) > MAX_CONTACTS:
        raise IntakeError("too_many_contacts", f"more than {MAX_CONTACTS} contacts")
    if not items:
        raise IntakeError("no_valid_contacts", "contacts is empty")
    result = ParsedContacts()
    bad: list[InvalidRow] = []
    bad_zones: list[InvalidRow] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            bad.append(InvalidRow(index, "", "contact is not an object"))
            continue
        phone = item.get("phone")
        if not isinstance(phone, str):
            bad.append(InvalidRow(index, repr(phone)[:64], "phone is missing or not a string"))
            continue
        problem = e164_problem(phone)
        if problem:
            bad.append(InvalidRow(index, phone[:64], problem))
            continue
        zone = item.get("timezone")
        if (
            zone is not None
            and zone != ""
            and not (isinstance(zone, str) and windows.valid_zone(zone))
        ):
            bad_zones.append(InvalidRow(index, str(zone)[:64], "not a known IANA time zone"))
            continue
        if phone in seen:
            result.duplicates += 1
            continue
        seen.add(phone)
        data = dict(item)
        data["phone"] = phone
        result.contacts.append((phone, data))
    if bad:
        indexes = [b.row for b in bad]
        shown = ", ".join(str(i) for i in indexes[:20]) + (" ..." if len(indexes) > 20 else "")
        raise IntakeError(
            "invalid_phone_format",
            f"{len(bad)} contact(s) have an invalid phone number (E.164 required): index {shown}",
            {
                "invalidIndexes": indexes[:MAX_REPORTED_INVALID],
                "invalidContacts": [_row_json(b) for b in bad[:MAX_REPORTED_INVALID]],
                "invalidCount": len(bad),
            },
        )
    if bad_zones:
        shown = ", ".join(str(b.row) for b in bad_zones[:20])
        raise IntakeError(
            "invalid_timezone",
            f"{len(bad_zones)} contact(s) have an unknown IANA timezone: index {shown}",
            {
                "invalidIndexes": [b.row for b in bad_zones[:MAX_REPORTED_INVALID]],
                "invalidContacts": [_row_json(b) for b in bad_zones[:MAX_REPORTED_INVALID]],
                "invalidCount": len(bad_zones),
            },
        )
    return result


def _invalid(result: ParsedContacts, row: int, value: str, reason: str) -> None:
    result.invalid_count += 1
    if len(result.invalid) < MAX_REPORTED_INVALID:
        result.invalid.append(InvalidRow(row, value[:64], reason))


def _row_json(row: InvalidRow) -> dict[str, Any]:
    return {"row": row.row, "value": row.value, "reason": row.reason}


def _invalid_details(result: ParsedContacts) -> dict[str, Any]:
    return {
        "invalidRows": [_row_json(r) for r in result.invalid],
        "invalidCount": result.invalid_count,
        "duplicatesRemoved": result.duplicates,
    }


def invalid_report(result: ParsedContacts) -> dict[str, Any]:
    """The part of a create response that reports skipped rows."""
    return _invalid_details(result)
