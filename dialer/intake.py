"""Contact intake: parse CSV or JSON contact lists and validate E.164 numbers."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

MAX_CONTACTS = 10_000
MAX_CSV_BYTES = 10 * 1024 * 1024
MAX_REPORTED_INVALID = 100
MAX_FIELD_CHARS = 10_000
MAX_COLUMNS = 200
# A contact's own data (its fields as JSON, UTF-8) may take at most this many bytes.
MAX_CONTACT_DATA_BYTES = 64 * 1024

# The csv module refuses fields over 128 KB by raising for the whole file; cells are checked
# against MAX_FIELD_CHARS row by row instead (the file is at most MAX_CSV_BYTES anyway).
csv.field_size_limit(MAX_CSV_BYTES + 1)

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
    """Valid contacts in upload order, and what was skipped. Tests read them with `decoded`."""

    # (phone, the contact's data as a JSON object's text): encoded as soon as it is read, so that
    # a wide list is held as text rather than as millions of small Python objects.
    contacts: list[tuple[str, str]] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    invalid_count: int = 0
    duplicates: int = 0

    def decoded(self) -> list[tuple[str, dict[str, Any]]]:
        """The contacts with their data as dicts."""
        return [(phone, json.loads(data)) for phone, data in self.contacts]


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
    if len(header) > MAX_COLUMNS:
        raise IntakeError(
            "too_many_columns", f"CSV has {len(header)} columns; at most {MAX_COLUMNS} are allowed"
        )
    columns = [h.strip() for h in header]
    if any(len(c) > MAX_FIELD_CHARS for c in columns):
        raise IntakeError(
            "invalid_csv", f"CSV header has a column name longer than {MAX_FIELD_CHARS} characters"
        )
    phone_index = next((i for i, c in enumerate(columns) if c.lower() == "phone"), None)
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
            if any(len(cell) > MAX_FIELD_CHARS for cell in record):
                _invalid(result, line_no, "", f"a cell is longer than {MAX_FIELD_CHARS} characters")
                continue
            phone = record[phone_index].strip() if phone_index < len(record) else ""
            problem = e164_problem(phone)
            if problem:
                _invalid(result, line_no, phone, problem)
                continue
            if phone in seen:
                result.duplicates += 1
                continue
            fields: dict[str, Any] = {}
            for i, column in enumerate(columns):
                value = record[i].strip() if i < len(record) else ""
                if i == phone_index:
                    fields["phone"] = phone
                elif column and value:  # empty cells are not stored
                    fields[column] = value
            encoded = encode(fields)
            if _size(encoded) > MAX_CONTACT_DATA_BYTES:
                _invalid(result, line_no, phone, _TOO_LARGE)
                continue
            seen.add(phone)
            result.contacts.append((phone, encoded))
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
    too_large: list[int] = []
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
        if phone in seen:
            result.duplicates += 1
            continue
        data = dict(item)
        data["phone"] = phone
        encoded = encode(data)
        if _size(encoded) > MAX_CONTACT_DATA_BYTES:
            too_large.append(index)
            continue
        seen.add(phone)
        result.contacts.append((phone, encoded))
    if too_large and not bad:
        raise IntakeError(
            "contact_data_too_large",
            f"{len(too_large)} contact(s) carry more than {MAX_CONTACT_DATA_BYTES // 1024} KB of "
            f"data: index {_indexes(too_large)}",
            {"invalidIndexes": too_large[:MAX_REPORTED_INVALID], "invalidCount": len(too_large)},
        )
    if bad:
        indexes = [b.row for b in bad]
        raise IntakeError(
            "invalid_phone_format",
            f"{len(bad)} contact(s) have an invalid phone number (E.164 required): "
            f"index {_indexes(indexes)}",
            {
                "invalidIndexes": indexes[:MAX_REPORTED_INVALID],
                "invalidContacts": [_row_json(b) for b in bad[:MAX_REPORTED_INVALID]],
                "invalidCount": len(bad),
            },
        )
    return result


_TOO_LARGE = f"contact data is larger than {MAX_CONTACT_DATA_BYTES // 1024} KB"


def encode(data: dict[str, Any]) -> str:
    """A contact's data as it is stored: a JSON object."""
    return json.dumps(data, ensure_ascii=False)


def _size(encoded: str) -> int:
    """UTF-8 bytes of encoded data (4 for a character beyond U+FFFF, 3 for other non-ASCII)."""
    if encoded.isascii():
        return len(encoded)
    return len(encoded.encode("utf-8", "surrogatepass"))


def _indexes(indexes: list[int]) -> str:
    """The first 20 indexes for a message."""
    return ", ".join(str(i) for i in indexes[:20]) + (" ..." if len(indexes) > 20 else "")


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
