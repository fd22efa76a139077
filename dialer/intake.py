"""Contact intake: parse CSV or JSON contact lists and validate phone numbers.

Files come as spreadsheet tools export them: UTF-8 with or without BOM, UTF-16 with BOM, else
Windows-1252; comma, semicolon or tab delimited; the phone column under one of several usual
names. Numbers are strict E.164 unless a default country is given, in which case formatted
national numbers are read with `phonenumbers` in that country and stored in E.164.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from dialer import windows

MAX_CONTACTS = 10_000  # valid contacts in one job
MAX_ROWS = 20_000  # rows of a file (or items of a JSON list), valid or not
# A do-not-call import (numbers only): rows and numbers of one file (see dialer.dnc).
MAX_NUMBER_ROWS = 200_000
MAX_NUMBERS = 100_000
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
# A North American number in E.164 whose national number has no leading zero: `phonenumbers`
# would parse it to exactly (country code 1, the ten digits), so it is built directly (parsing
# is a third of the cost of checking a large upload).
_NANP_E164 = re.compile(r"\+1[1-9][0-9]{9}")
# What a formatted number may hold when a default country is given: ASCII digits, a leading +,
# spaces (also no-break), dashes, dots, slashes and parentheses; no letters, no extension.
_FORMATTED = re.compile(r"\+?[0-9 \u00a0().\-/]{2,40}")

# The phone column when none is named `phone` (any case): these names, compared with case,
# spaces, `_` and `-` ignored, in this order of preference.
PHONE_COLUMN_ALIASES = (
    "phonenumber",
    "mobile",
    "mobilenumber",
    "cell",
    "telephone",
    "tel",
    "tonumber",
    "number",
)
# JSON contacts: `phone`, else `phone_number` / `phoneNumber` (compared the same way).
JSON_PHONE_KEYS = ("phone", "phonenumber")


class IntakeError(Exception):
    """The contact list cannot be used at all."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True, slots=True)
class InvalidRow:
    row: int  # CSV: 1-based row of the data row counting the header as row 1; JSON: 0-based index
    value: str
    reason: str


@dataclass
class ParsedContacts:
    """Valid contacts in upload order, and what was skipped. Tests read them with `decoded`."""

    # (phone, the contact's data as a JSON object's text): encoded as soon as it is read, so that
    # a wide list is held as text rather than as millions of small Python objects. Empty text
    # for a do-not-call import's numbers (parse_csv's numbers_only).
    contacts: list[tuple[str, str]] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    invalid_count: int = 0
    duplicates: int = 0
    rows: int = 0  # data rows read, blank lines not counted
    encoding: str | None = None  # CSV: the encoding the file was read in
    phone_column: str | None = None  # CSV: the header of the column read as the phone number

    def decoded(self) -> list[tuple[str, dict[str, Any]]]:
        """The contacts with their data as dicts."""
        return [(phone, json.loads(data)) for phone, data in self.contacts]


def e164_problem(value: str) -> str | None:
    """Why `value` is not a valid E.164 number, or None if it is."""
    return canonical_e164(value)[1]


def canonical_e164(value: str) -> tuple[str | None, str | None]:
    """(the number as E.164 writes it, None), or (None, why `value` is not a valid E.164 number).

    One person, one spelling: a national trunk prefix written after the country code
    (+44 0 20..., +49 0 30...) is read as `phonenumbers` reads it, and dropped, so that the
    do-not-call list, duplicates, caps and the one-live-call rule, which compare numbers as
    text, see the same number (+44 20...). Italy's leading zero is part of its numbers: kept.
    """
    if not _E164.fullmatch(value):
        return None, "not in E.164 format (+ then 2 to 15 digits, no spaces or punctuation)"
    if _NANP_E164.fullmatch(value):  # (no trunk prefix can follow +1: the fast path)
        if _valid_national(1, value[2:]):
            return value, None
        return None, "not a valid number for its country code"
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return None, "not a phone number"
    if not valid_number(parsed):
        return None, "not a valid number for its country code"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


# The number types `phonenumbers` knows (PhoneMetadata fields): a number is valid when it is of
# one of them in its region.
_NUMBER_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


@dataclass(frozen=True, slots=True)
class _RegionPatterns:
    """One region's patterns from the `phonenumbers` metadata, compiled once: the general
    pattern, and the patterns of every number type joined into one regex per set of possible
    lengths (None: any length)."""

    leading_digits: re.Pattern[str] | None
    general: tuple[frozenset[int] | None, re.Pattern[str]] | None
    typed: tuple[tuple[frozenset[int] | None, re.Pattern[str]], ...]

    def matches(self, nsn: str) -> bool:
        general = self.general
        if general is None or not _fits(general, nsn):
            return False
        return any(_fits(typed, nsn) for typed in self.typed)


def _fits(desc: tuple[frozenset[int] | None, re.Pattern[str]], nsn: str) -> bool:
    lengths, pattern = desc
    return (lengths is None or len(nsn) in lengths) and pattern.fullmatch(nsn) is not None


@functools.cache
def _region_patterns(country_code: int, region: str) -> _RegionPatterns | None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return None

    def lengths_and_pattern(desc: Any) -> tuple[frozenset[int] | None, str] | None:
        if desc is None or not desc.national_number_pattern:
            return None
        lengths = frozenset(desc.possible_length) if desc.possible_length else None
        return lengths, desc.national_number_pattern

    general = lengths_and_pattern(metadata.general_desc)
    joined: dict[frozenset[int] | None, list[str]] = {}
    for name in _NUMBER_TYPES:
        found = lengths_and_pattern(getattr(metadata, name))
        if found is not None:
            joined.setdefault(found[0], []).append(found[1])
    return _RegionPatterns(
        leading_digits=re.compile(metadata.leading_digits) if metadata.leading_digits else None,
        general=None if general is None else (general[0], re.compile(general[1])),
        typed=tuple(
            (lengths, re.compile("|".join(f"(?:{p})" for p in patterns)))
            for lengths, patterns in joined.items()
        ),
    )


def _valid_national(country_code: int, nsn: str) -> bool:
    """`phonenumbers.is_valid_number` for (country code, national significant number), with
    the same metadata and the same steps (the region is the first of the country code's that
    claims the number by its leading digits or, without those, by its patterns), each region's
    patterns compiled once: the library looks up and tries every type's pattern in turn, which
    was half the cost of checking a large upload."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if not regions:
        return False
    if len(regions) == 1:
        patterns = _region_patterns(country_code, regions[0])
        return patterns is not None and patterns.matches(nsn)
    for region in regions:
        patterns = _region_patterns(country_code, region)
        if patterns is None:
            continue
        if patterns.leading_digits is not None:
            if patterns.leading_digits.match(nsn):
                return patterns.matches(nsn)
        elif patterns.matches(nsn):
            return True
    return False


def prepare() -> None:
    """Compile the North American patterns now (70 ms), not in the first upload."""
    _valid_national(1, "2025550100")


def valid_number(number: phonenumbers.PhoneNumber) -> bool:
    """Whether a parsed number is valid: `phonenumbers.is_valid_number`, faster."""
    if number.country_code is None:
        return False
    return _valid_national(number.country_code, phonenumbers.national_significant_number(number))


def default_region(code: str | None) -> str | None:
    """The `defaultCountry` option as a region `phonenumbers` knows (ISO 3166 alpha-2)."""
    if code is None:
        return None
    region = code.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise IntakeError(
            "invalid_default_country",
            f"defaultCountry {code[:20]!r} is not an ISO 3166 alpha-2 country code (e.g. US, GB)",
        )
    return region


def normalize_phone(value: str, region: str | None) -> tuple[str | None, str | None]:
    """(the number in E.164, None) or (None, why it is not a valid number).

    Without a region only strict E.164 passes (written canonically, see canonical_e164); with
    one, formatted and national numbers are read as dialed from that country.
    """
    if region is None:
        return canonical_e164(value)
    text = value.strip()
    if not text:
        return None, "phone is empty"
    if not _FORMATTED.fullmatch(text):
        return None, (
            "not a phone number (only digits, spaces, dashes, dots, slashes, parentheses and a "
            "leading + are read)"
        )
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None, "not a phone number"
    if not valid_number(parsed):
        return None, f"not a valid number (read as dialed from {region})"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None


def formatted_international(value: str) -> str | None:
    """A number written with its `+` and country code, formatted as people write it
    (`+44 20 7946 0001`, `+1 (202) 555-0143`), in E.164; None when it is not a valid one."""
    text = value.strip()
    if not text.startswith("+") or not _FORMATTED.fullmatch(text):
        return None
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def decode_csv(data: bytes) -> tuple[str, str]:
    """The file's text and its encoding: UTF-8 (BOM or not), UTF-16 with a BOM, else
    Windows-1252 (Excel's plain "CSV")."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise IntakeError("invalid_csv", "CSV file starts as UTF-16 but is not") from None
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    if data.startswith(codecs.BOM_UTF8):
        raise IntakeError("invalid_csv", "CSV file starts as UTF-8 but is not valid UTF-8")
    # Five bytes have no character in Windows-1252; they never hold a phone number.
    return data.decode("cp1252", errors="replace"), "windows-1252"


def detect_delimiter(text: str) -> str:
    """Comma, semicolon or tab: whichever the header line (the first non-blank one) has most
    of; a comma when it has none."""
    first_line = next((line for line in text.splitlines() if line.strip(" \t,;")), "")
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _squashed(name: str) -> str:
    """A column name compared without case, spaces, `_` or `-`."""
    return re.sub(r"[\s_\-]", "", name).lower()


def find_phone_column(columns: list[str], named: str | None) -> int:
    """The index of the phone column: the one `named` (phoneColumn), else `phone` in any case,
    else the first of PHONE_COLUMN_ALIASES present."""
    if named is not None:
        wanted = named.strip()
        if wanted in columns:
            return columns.index(wanted)
        folded = [c.casefold() for c in columns]
        if wanted.casefold() in folded:
            return folded.index(wanted.casefold())
        raise _missing_phone_column(columns, f"CSV has no column {wanted[:100]!r} (phoneColumn)")
    found = next((i for i, c in enumerate(columns) if c.lower() == "phone"), None)
    if found is not None:
        return found
    squashed = [_squashed(c) for c in columns]
    for alias in PHONE_COLUMN_ALIASES:
        if alias in squashed:
            return squashed.index(alias)
    raise _missing_phone_column(
        columns,
        "CSV has no phone column: name it 'phone' (or 'phone number', 'mobile', 'cell', "
        "'telephone', 'tel', 'to number', 'number'), or name yours with phoneColumn",
    )


def _missing_phone_column(columns: list[str], message: str) -> IntakeError:
    found = [c for c in columns if c]
    shown = ", ".join(repr(c[:50]) for c in found[:20]) + (" ..." if len(found) > 20 else "")
    return IntakeError(
        "missing_phone_column",
        f"{message}; columns found: {shown or 'none'}",
        {"columnsFound": found},
    )


def parse_csv(
    data: bytes,
    *,
    default_country: str | None = None,
    phone_column: str | None = None,
    numbers_only: bool = False,
) -> ParsedContacts:
    """Parse a CSV upload. Invalid rows are skipped and reported; duplicates dropped and counted.

    With `numbers_only` (a do-not-call import) only the phone column is read: what the other
    cells hold (an unknown timezone, a field past the header, a long cell, a column named twice)
    never costs a number its listing; a contact's data is then empty (the number is all a listing
    keeps), and a file may hold MAX_NUMBERS numbers in MAX_NUMBER_ROWS rows.
    """
    if len(data) > MAX_CSV_BYTES:
        raise IntakeError("file_too_large", "CSV file is larger than 10 MB")
    region = default_region(default_country)
    text, encoding = decode_csv(data)
    if "\x00" in text:
        raise IntakeError(
            "invalid_csv",
            "CSV file contains NUL bytes (is it a binary file, or UTF-16 without a byte order "
            "mark?)",
        )
    if not text.strip():
        raise IntakeError("invalid_csv", "CSV file is empty")
    delimiter = detect_delimiter(text)
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
    phone_index = find_phone_column(columns, phone_column)
    # The recipient's own IANA zone (optional): wins over the zones of the number.
    tz_index = (
        None
        if numbers_only
        else next((i for i, c in enumerate(columns) if c.lower() == "timezone"), None)
    )
    named = [c for c in columns if c and not (numbers_only and c != columns[phone_index])]
    if len(set(named)) != len(named):
        raise IntakeError("invalid_csv", "CSV header has duplicate column names")

    result = ParsedContacts(encoding=encoding, phone_column=columns[phone_index])
    most_rows, most, what = (
        (MAX_NUMBER_ROWS, MAX_NUMBERS, "numbers")
        if numbers_only
        else (MAX_ROWS, MAX_CONTACTS, "contacts")
    )
    seen: set[str] = set()
    try:
        for line_no, record in enumerate(reader, start=2):
            if not record or all(not cell.strip() for cell in record):
                continue
            result.rows += 1
            if result.rows > most_rows:
                raise IntakeError("too_many_contacts", f"CSV has more than {most_rows} rows")
            problem = None if numbers_only else _row_problem(record, len(columns))
            if problem is not None:
                _invalid(result, line_no, "", problem)
                continue
            raw = record[phone_index].strip() if phone_index < len(record) else ""
            phone, problem = normalize_phone(raw, region)
            if phone is None:
                _invalid(result, line_no, raw, problem or "not a phone number")
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
            if len(result.contacts) == most:
                raise IntakeError("too_many_contacts", f"CSV has more than {most} valid {what}")
            if numbers_only:  # (no data: the number is all a listing keeps)
                seen.add(phone)
                result.contacts.append((phone, ""))
                continue
            fields: dict[str, Any] = {}
            for i, column in enumerate(columns):
                value = record[i].strip() if i < len(record) else ""
                if i == phone_index:
                    fields["phone"] = phone
                elif column and value:  # empty cells are not stored
                    fields["timezone" if i == tz_index else column] = value
            encoded = encode(fields)
            if _size(encoded) > MAX_CONTACT_DATA_BYTES:
                _invalid(result, line_no, phone, _TOO_LARGE)
                continue
            seen.add(phone)
            result.contacts.append((phone, encoded))
    except csv.Error as exc:
        raise IntakeError("invalid_csv", f"CSV is malformed: {exc}") from None
    if not result.contacts:
        hint = (
            "" if region is not None else " (E.164 required; defaultCountry reads national formats)"
        )
        raise IntakeError(
            "no_valid_contacts",
            f"CSV contains no valid phone numbers{hint}",
            _invalid_details(result),
        )
    return result


def _row_problem(record: list[str], columns: int) -> str | None:
    """Why a CSV row is invalid whatever its phone number, or None."""
    # Cells past the header are an error unless empty (trailing delimiters).
    if len(record) > columns and any(c.strip() for c in record[columns:]):
        return "row has more fields than the header"
    if any(len(cell) > MAX_FIELD_CHARS for cell in record):
        return f"a cell is longer than {MAX_FIELD_CHARS} characters"
    return None


def _zone_key(item: dict[str, Any]) -> str | None:
    """A contact's key for its own zone in another case (`timeZone`, `TimeZone`), as a CSV
    header is matched (it was ignored: the zones of the number were used instead)."""
    return next((k for k in item if k.lower() == "timezone"), None)


def _json_phone_key(item: dict[str, Any], named: str | None) -> str | None:
    if named is not None:
        return named if named in item else None
    if "phone" in item:
        return "phone"
    return next((k for k in item if _squashed(k) in JSON_PHONE_KEYS), None)


def _shown(value: Any) -> str:
    """A value as an error report shows it (never Python's `None`)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:64]
    return json.dumps(value, ensure_ascii=False, default=str)[:64]


def parse_json_contacts(
    items: list[Any], *, default_country: str | None = None, phone_column: str | None = None
) -> ParsedContacts:
    """Validate JSON contacts: any invalid phone rejects the whole list (naming the indexes)."""
    region = default_region(default_country)
    if len(items) > MAX_ROWS:
        raise IntakeError("too_many_contacts", f"more than {MAX_ROWS} contacts")
    if not items:
        raise IntakeError("no_valid_contacts", "contacts is empty")
    result = ParsedContacts(rows=len(items))
    bad: list[InvalidRow] = []
    too_large: list[int] = []
    bad_zones: list[InvalidRow] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            bad.append(InvalidRow(index, _shown(item), "contact is not an object"))
            continue
        key = _json_phone_key(item, phone_column)
        value = item.get(key) if key is not None else None
        if key is None or value is None:
            wanted = repr(phone_column) if phone_column else "phone, phone_number or phoneNumber"
            bad.append(InvalidRow(index, "", f"phone is missing ({wanted})"))
            continue
        if region is not None and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a number typed without its +, as spreadsheets keep it
        if not isinstance(value, str):
            bad.append(InvalidRow(index, _shown(value), "phone is not a string"))
            continue
        phone, problem = normalize_phone(value, region)
        if phone is None:
            bad.append(InvalidRow(index, value[:64], problem or "not a phone number"))
            continue
        zone_key = "timezone" if "timezone" in item else _zone_key(item)
        zone = item.get(zone_key) if zone_key is not None else None
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
        if len(result.contacts) == MAX_CONTACTS:
            raise IntakeError("too_many_contacts", f"more than {MAX_CONTACTS} valid contacts")
        data = {k: v for k, v in item.items() if k != key}
        data["phone"] = phone
        if zone_key is not None and zone_key != "timezone":  # read as a CSV header is
            data["timezone"] = data.pop(zone_key)
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
        strict = "E.164 required" if region is None else f"read as dialed from {region}"
        raise IntakeError(
            "invalid_phone_format",
            f"{len(bad)} contact(s) have an invalid phone number ({strict}): "
            f"index {_indexes(indexes)}",
            {
                "invalidIndexes": indexes[:MAX_REPORTED_INVALID],
                "invalidContacts": _contacts_json(bad),
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
                # (`index`, as for invalid numbers: it said `row`, the key of a file's rows)
                "invalidContacts": _contacts_json(bad_zones),
                "invalidCount": len(bad_zones),
            },
        )
    return result


_TOO_LARGE = f"contact data is larger than {MAX_CONTACT_DATA_BYTES // 1024} KB"


# One encoder for every contact: `json.dumps` with an option builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def encode(data: dict[str, Any]) -> str:
    """A contact's data as it is stored: a JSON object."""
    return _ENCODE(data)


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


def _contacts_json(bad: list[InvalidRow]) -> list[dict[str, Any]]:
    """Invalid contacts of a JSON list, by their index in it."""
    return [
        {"index": b.row, "value": b.value, "reason": b.reason} for b in bad[:MAX_REPORTED_INVALID]
    ]


def _row_json(row: InvalidRow) -> dict[str, Any]:
    return {"row": row.row, "value": row.value, "reason": row.reason}


def _invalid_details(result: ParsedContacts) -> dict[str, Any]:
    return {
        "invalidRows": [_row_json(r) for r in result.invalid],
        "invalidCount": result.invalid_count,
        "duplicatesRemoved": result.duplicates,
    }


def invalid_report(result: ParsedContacts) -> dict[str, Any]:
    """The part of a CSV create response that reports how the file was read and which rows
    were skipped; a `warning` when more than half the rows were invalid."""
    report = _invalid_details(result)
    report["detectedEncoding"] = result.encoding
    report["phoneColumn"] = result.phone_column
    warning = invalid_warning(result)
    if warning is not None:
        report["warning"] = warning
    return report


def invalid_warning(result: ParsedContacts) -> str | None:
    """Why to check a list before it is dialed: more than half of its rows were invalid."""
    if result.invalid_count * 2 <= result.rows:
        return None
    return (
        f"{result.invalid_count} of {result.rows} rows have no valid phone number and will not "
        "be called: check invalidRows (is the phone column right? do the numbers need "
        "defaultCountry?)"
    )
