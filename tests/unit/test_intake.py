"""Contact intake: CSV and JSON contact lists, E.164 validation, limits and hostile input."""

from __future__ import annotations

from typing import Any

import pytest

from dialer import intake
from tests.unit.conftest import csv_bytes, phones

VALID = "+12025550101"
OTHER = "+442071838750"


def intake_error(data: bytes) -> intake.IntakeError:
    """The IntakeError that parsing `data` as CSV raises."""
    with pytest.raises(intake.IntakeError) as caught:
        intake.parse_csv(data)
    return caught.value


def json_error(items: list[Any]) -> intake.IntakeError:
    """The IntakeError that validating `items` as JSON contacts raises."""
    with pytest.raises(intake.IntakeError) as caught:
        intake.parse_json_contacts(items)
    return caught.value


def csv_of(count: int) -> bytes:
    """A CSV with `count` distinct valid numbers."""
    return csv_bytes("phone", *phones(count))


# ------------------------------------------------------------------ e164_problem


@pytest.mark.parametrize(
    "number", [VALID, OTHER, "+447911123456", "+4915112345678", "+33612345678"]
)
def test_e164_accepts_valid_numbers(number: str) -> None:
    """Well-formed numbers that are valid for their country code have no problem."""
    assert intake.e164_problem(number) is None


@pytest.mark.parametrize(
    "number",
    [
        "12025550101",  # no plus
        "+1 202 555 0101",  # spaces
        "+1-202-555-0101",  # dashes
        "+1(202)5550101",  # parentheses
        "+1.202.555.0101",  # dots
        " +12025550101",  # leading space
        "+12025550101\n",  # trailing newline (must not slip past the end anchor)
        "+1\u0662\u0660\u06625550101",  # Arabic-Indic digits are not ASCII digits
        "+",
        "",
        "+0123456789",  # country codes never start with 0
        "+1234567890123456",  # 16 digits: longer than E.164 allows
        "00442071838750",  # international prefix instead of +
        '=HYPERLINK("x")',
    ],
)
def test_e164_rejects_malformed_numbers(number: str) -> None:
    """Anything but '+' then 2 to 15 ASCII digits is reported as not being E.164."""
    problem = intake.e164_problem(number)
    assert problem is not None and "E.164" in problem


@pytest.mark.parametrize("number", ["+12025550", "+999123456789", "+1202555010199"])
def test_e164_rejects_well_formed_but_invalid_numbers(number: str) -> None:
    """Numbers that look like E.164 but phonenumbers rejects are reported, not as format errors."""
    problem = intake.e164_problem(number)
    assert problem is not None and "E.164" not in problem


@pytest.mark.parametrize(
    "number, canonical",
    [
        ("+4402071838752", "+442071838752"),  # the UK's trunk 0 after +44
        ("+4903012345678", "+493012345678"),
        ("+330142685300", "+33142685300"),
        ("+610291234568", "+61291234568"),
        ("+390612345678", "+390612345678"),  # Italy's leading 0 is part of the number
        ("+442071838752", "+442071838752"),
        (VALID, VALID),
    ],
)
def test_one_person_has_one_spelling(number: str, canonical: str) -> None:
    """Strict E.164 is read as phonenumbers reads it and written back canonically, so that
    text comparisons (do-not-call, duplicates, caps) see one person under one spelling; both
    strict intake and CSV rows give that spelling."""
    assert intake.canonical_e164(number) == (canonical, None)
    assert intake.normalize_phone(number, None) == (canonical, None)
    parsed = intake.parse_csv(csv_bytes("phone", number, canonical))
    assert ([p for p, _ in parsed.contacts], parsed.duplicates) == ([canonical], 1)


# ------------------------------------------------------------------ CSV: happy paths


@pytest.mark.parametrize("header", ["phone", "Phone", "PHONE", " phone ", "pHoNe"])
def test_csv_phone_column_found_case_insensitively(header: str) -> None:
    """The phone column is found whatever its case or surrounding spaces, stored under 'phone'."""
    result = intake.parse_csv(csv_bytes(f"name,{header}", f"Ann,{VALID}"))
    assert result.decoded() == [(VALID, {"name": "Ann", "phone": VALID})]


def test_csv_column_merely_containing_phone_is_not_the_phone_column() -> None:
    """'Home Phone' or 'phones' are not a usual name of the phone column: not taken."""
    error = intake_error(csv_bytes("Home Phone,phones,name", f"{VALID},{VALID},Ann"))
    assert error.code == "missing_phone_column"
    assert error.details["columnsFound"] == ["Home Phone", "phones", "name"]


@pytest.mark.parametrize("bom", [False, True])
def test_csv_utf8_with_and_without_bom(bom: bool) -> None:
    """UTF-8 is read with or without a BOM; the BOM never sticks to the first column's name."""
    result = intake.parse_csv(csv_bytes("phone,name", f"{VALID},Zoë Ærø", bom=bom))
    assert result.decoded() == [(VALID, {"phone": VALID, "name": "Zoë Ærø"})]


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_csv_comma_and_semicolon_delimiters(delimiter: str) -> None:
    """Both comma- and semicolon-separated files are parsed into the same contacts."""
    data = csv_bytes(
        delimiter.join(["phone", "name", "city"]),
        delimiter.join([VALID, "Ann", "Paris"]),
        delimiter.join([OTHER, "Bob", "London"]),
    )
    result = intake.parse_csv(data)
    assert result.decoded() == [
        (VALID, {"phone": VALID, "name": "Ann", "city": "Paris"}),
        (OTHER, {"phone": OTHER, "name": "Bob", "city": "London"}),
    ]


def test_csv_semicolon_file_keeps_commas_inside_fields() -> None:
    """In a semicolon file, commas are ordinary characters of a field."""
    result = intake.parse_csv(csv_bytes("phone;note", f"{VALID};late, call after 5"))
    assert result.decoded()[0][1]["note"] == "late, call after 5"


def test_csv_crlf_line_endings() -> None:
    """Windows line endings are accepted and do not leak into values."""
    result = intake.parse_csv(
        csv_bytes("phone,name", f"{VALID},Ann", f"{OTHER},Bob", newline="\r\n")
    )
    assert [c[1] for c in result.decoded()] == [
        {"phone": VALID, "name": "Ann"},
        {"phone": OTHER, "name": "Bob"},
    ]


def test_csv_extra_columns_kept_as_custom_fields_in_upload_order() -> None:
    """Every non-phone column becomes a custom field; contacts keep the file's order."""
    data = csv_bytes(
        "account_id,phone,name,due_date",
        f"A-1,{OTHER},Bob,2026-02-01",
        f"A-2,{VALID},Ann,2026-03-01",
    )
    result = intake.parse_csv(data)
    assert result.decoded() == [
        (OTHER, {"account_id": "A-1", "phone": OTHER, "name": "Bob", "due_date": "2026-02-01"}),
        (VALID, {"account_id": "A-2", "phone": VALID, "name": "Ann", "due_date": "2026-03-01"}),
    ]


def test_csv_short_row_keeps_only_the_fields_it_has() -> None:
    """A row with fewer fields than the header is kept; missing and empty cells are not stored."""
    result = intake.parse_csv(csv_bytes("phone,name,city,plan", f"{VALID},Ann,"))
    assert result.decoded() == [(VALID, {"phone": VALID, "name": "Ann"})]


def test_csv_surrounding_whitespace_is_trimmed() -> None:
    """Cells are trimmed, so '+1..., Ann' (space after the comma) is accepted as is."""
    result = intake.parse_csv(csv_bytes("phone, name", f" {VALID} , Ann "))
    assert result.decoded() == [(VALID, {"phone": VALID, "name": "Ann"})]


@pytest.mark.parametrize("prefix", ["\n", "\r\n\r\n", "  \n;;\n"], ids=["lf", "crlf", "spaces"])
def test_csv_blank_lines_before_the_header_are_skipped(prefix: str) -> None:
    """Blank lines above the header do not hide the phone column; rows count from the header."""
    result = intake.parse_csv(csv_bytes(f"{prefix}phone;name", f"{VALID};Ann", "bad;Bob"))
    assert result.decoded() == [(VALID, {"phone": VALID, "name": "Ann"})]
    assert [r.row for r in result.invalid] == [3]


def test_csv_blank_lines_are_skipped_but_row_numbers_stay_true() -> None:
    """Blank lines are not contacts, and invalid rows after them keep their real line number."""
    result = intake.parse_csv(csv_bytes("phone", VALID, "", ",", "bad"))
    assert [c[0] for c in result.decoded()] == [VALID]
    assert result.invalid == [intake.InvalidRow(5, "bad", result.invalid[0].reason)]


# ------------------------------------------------------------------ CSV: invalid rows


def test_csv_invalid_rows_skipped_and_reported_with_row_value_reason() -> None:
    """Invalid numbers are skipped; each is reported with its line (header = 1), value, reason."""
    data = csv_bytes("phone,name", "2025550101,A", f"{VALID},B", "+1 202 555 0102,C", "+12025550,D")
    result = intake.parse_csv(data)
    assert [c[0] for c in result.decoded()] == [VALID]
    assert [(r.row, r.value) for r in result.invalid] == [
        (2, "2025550101"),
        (4, "+1 202 555 0102"),
        (5, "+12025550"),
    ]
    assert all(r.reason for r in result.invalid)
    assert result.invalid_count == 3


def test_csv_row_with_more_fields_than_header_is_invalid() -> None:
    """A row with more fields than the header is skipped and reported, never misaligned."""
    result = intake.parse_csv(csv_bytes("phone,name", f"{VALID},Ann", f"{OTHER},Bob,extra"))
    assert [c[0] for c in result.decoded()] == [VALID]
    assert [(r.row, r.reason) for r in result.invalid] == [
        (3, "row has more fields than the header")
    ]


def test_csv_numbers_only_reads_the_phone_column_alone() -> None:
    """numbers_only (a do-not-call import): an unknown zone, a field past the header, a long
    cell or another column named twice never make a row invalid; a bad number still does, a
    phone column named twice is still refused, and only the phone is kept."""
    long_cell = "x" * (intake.MAX_FIELD_CHARS + 1)
    data = csv_bytes(
        "note,phone,timezone,note",
        f"a,{VALID},Mars/Base,b",
        f"c,{OTHER},,d,extra",
        f"{long_cell},+12025550102,UTC,e",
        "f,oops,UTC,g",
    )
    result = intake.parse_csv(data, numbers_only=True)
    assert result.contacts == [(n, "") for n in (VALID, OTHER, "+12025550102")]
    assert [(r.row, r.value) for r in result.invalid] == [(5, "oops")]
    with pytest.raises(intake.IntakeError) as caught:
        intake.parse_csv(csv_bytes("phone,phone", f"{VALID},{OTHER}"), numbers_only=True)
    assert caught.value.code == "invalid_csv"


def test_csv_invalid_report_lists_at_most_100_rows_but_counts_all() -> None:
    """With 150 invalid rows the report holds the first 100 and the count says 150."""
    data = csv_bytes("phone", *[f"bad{i}" for i in range(150)], VALID)
    result = intake.parse_csv(data)
    assert result.invalid_count == 150
    assert [r.row for r in result.invalid] == list(range(2, 102))
    report = intake.invalid_report(result)
    assert report["invalidCount"] == 150
    assert len(report["invalidRows"]) == intake.MAX_REPORTED_INVALID
    assert report["invalidRows"][0] == {
        "row": 2,
        "value": "bad0",
        "reason": result.invalid[0].reason,
    }


def test_csv_duplicates_dropped_and_counted_first_kept() -> None:
    """A number repeated in the list is dialed once: the first row wins, the rest are counted."""
    data = csv_bytes(
        "phone,name", f"{VALID},first", f"{OTHER},other", f"{VALID},second", f"{VALID},third"
    )
    result = intake.parse_csv(data)
    assert result.decoded() == [
        (VALID, {"phone": VALID, "name": "first"}),
        (OTHER, {"phone": OTHER, "name": "other"}),
    ]
    assert result.duplicates == 2
    assert intake.invalid_report(result)["duplicatesRemoved"] == 2
    assert result.invalid_count == 0


def test_csv_without_valid_rows_is_no_valid_contacts_with_report() -> None:
    """No valid row at all -> no_valid_contacts, with the invalid rows in the details."""
    error = intake_error(csv_bytes("phone", "12025550101", "+1 202"))
    assert error.code == "no_valid_contacts"
    assert error.details["invalidCount"] == 2
    assert [r["row"] for r in error.details["invalidRows"]] == [2, 3]


def test_csv_header_only_is_no_valid_contacts() -> None:
    """A header without data rows has no valid contact."""
    assert intake_error(csv_bytes("phone,name")).code == "no_valid_contacts"


# ------------------------------------------------------------------ CSV: unusable files


@pytest.mark.parametrize(
    ("header", "found"),
    [
        ("name,email", ["name", "email"]),
        ("fax", ["fax"]),
        ("home_phone,name", ["home_phone", "name"]),
        ("name;Fax Number", ["name", "Fax Number"]),
    ],
    ids=["2cols", "1col", "similar", "semi"],
)
def test_csv_missing_phone_column_lists_the_columns_found(header: str, found: list[str]) -> None:
    """A header without a phone column -> missing_phone_column, naming the columns it has."""
    error = intake_error(csv_bytes(header, f"{VALID},x"))
    assert error.code == "missing_phone_column"
    assert error.details["columnsFound"] == found
    assert all(repr(c) in error.message for c in found)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n\r\n  \n",
        b",,\n , ,\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
        b"phone\n+12025550101\x00\n",
        b'phone,name\n"+12025550101"x,Ann\n',
        b'phone,name\n+12025550101,"unterminated\n',
        b"phone,name,phone\n+12025550101,a,+12025550102\n",
    ],
    ids=[
        "empty",
        "blank",
        "only-delimiters",
        "binary",
        "nul",
        "junk-after-quote",
        "open-quote",
        "dup-header",
    ],
)
def test_csv_unreadable_files_are_invalid_csv(data: bytes) -> None:
    """Empty, non-UTF-8, binary or malformed files -> invalid_csv with a message."""
    error = intake_error(data)
    assert error.code == "invalid_csv"
    assert error.message


def test_csv_over_10_mb_is_file_too_large() -> None:
    """One byte over 10 MB -> file_too_large, before anything is decoded."""
    data = b"phone\n" + b"\xff" * (intake.MAX_CSV_BYTES - 5)
    assert len(data) == intake.MAX_CSV_BYTES + 1
    assert intake_error(data).code == "file_too_large"


def test_csv_10000_contacts_accepted() -> None:
    """Exactly 10,000 contacts is within the limit."""
    assert len(intake.parse_csv(csv_of(intake.MAX_CONTACTS)).decoded()) == intake.MAX_CONTACTS


def test_csv_10001_valid_contacts_is_too_many() -> None:
    """10,001 valid contacts -> too_many_contacts."""
    data = csv_bytes("phone", *phones(intake.MAX_CONTACTS), "+12025560101")
    assert intake_error(data).code == "too_many_contacts"


def test_csv_limit_counts_valid_contacts_only() -> None:
    """10,000 valid rows plus invalid ones and duplicates are accepted; the others reported."""
    data = csv_bytes("phone", *phones(intake.MAX_CONTACTS), "bad", "also bad", phones(1)[0])
    result = intake.parse_csv(data)
    assert len(result.contacts) == intake.MAX_CONTACTS
    assert (result.invalid_count, result.duplicates, result.rows) == (2, 1, intake.MAX_CONTACTS + 3)


def test_csv_over_20000_rows_is_too_many_even_if_mostly_invalid() -> None:
    """A file of more than 20,000 rows is refused, whatever they hold."""
    data = csv_bytes("phone", VALID, *["bad"] * intake.MAX_ROWS)
    error = intake_error(data)
    assert error.code == "too_many_contacts" and "20000 rows" in error.message


# ------------------------------------------------------------------ CSV: hostile content


@pytest.mark.parametrize(
    "payload",
    ["=cmd|' /C calc'!A0", "+SUM(1+1)", "@SUM(A1)", "-2+3", '=HYPERLINK("http://x","y")'],
)
def test_csv_formula_payloads_are_kept_verbatim_as_data(payload: str) -> None:
    """Spreadsheet formulas in custom fields are stored as plain text, neither run nor mangled."""
    quoted = '"' + payload.replace('"', '""') + '"'
    result = intake.parse_csv(csv_bytes("phone,note", f"{VALID},{quoted}"))
    assert result.decoded() == [(VALID, {"phone": VALID, "note": payload})]


def test_csv_formula_in_phone_column_is_an_invalid_row() -> None:
    """A formula where the number should be is not a number: the row is skipped and reported."""
    result = intake.parse_csv(csv_bytes("phone", "=cmd|' /C calc'!A0", VALID))
    assert [(r.row, r.value) for r in result.invalid] == [(2, "=cmd|' /C calc'!A0")]


def test_csv_unicode_fields_preserved() -> None:
    """Non-Latin scripts, emoji, RTL and combining characters survive intact."""
    name = "李雷 😀 مرحبا e\u0301 \u202eevil"
    result = intake.parse_csv(csv_bytes("phone,name", f"{VALID},{name}"))
    assert result.decoded()[0][1]["name"] == name


def test_csv_cell_over_the_limit_makes_its_row_invalid() -> None:
    """A cell of 10,001 characters makes its row invalid and reported; 10,000 is kept whole."""
    result = intake.parse_csv(
        csv_bytes(
            "phone,note",
            f"{VALID},{'x' * 10_001}",
            f"+12025550102,{'y' * intake.MAX_FIELD_CHARS}",
        )
    )
    assert [(r.row, r.reason) for r in result.invalid] == [
        (2, "a cell is longer than 10000 characters")
    ]
    assert result.decoded() == [
        ("+12025550102", {"phone": "+12025550102", "note": "y" * intake.MAX_FIELD_CHARS})
    ]


def test_csv_very_long_invalid_phone_value_is_reported_truncated() -> None:
    """The reported value of an invalid row is cut to 64 characters."""
    result = intake.parse_csv(csv_bytes("phone", "9" * 5_000, VALID))
    assert result.invalid[0].value == "9" * 64


def test_csv_field_beyond_csv_module_limit_is_a_reported_row() -> None:
    """A field larger than the csv module's default limit is a reported row, not a crash."""
    result = intake.parse_csv(csv_bytes("phone,note", f"{VALID},{'x' * 200_000}", "+12025550102"))
    assert result.invalid_count == 1
    assert [c[0] for c in result.decoded()] == ["+12025550102"]


def test_csv_with_more_than_200_columns_is_refused() -> None:
    """201 header columns -> too_many_columns; 200 are accepted."""
    header = ",".join(["phone", *(f"c{i}" for i in range(200))])
    assert intake_error(csv_bytes(header, VALID)).code == "too_many_columns"
    ok = ",".join(["phone", *(f"c{i}" for i in range(199))])
    assert len(intake.parse_csv(csv_bytes(ok, VALID)).decoded()) == 1


def test_csv_empty_cells_are_not_stored() -> None:
    """Of 200 columns only the filled cells become contact data."""
    header = ",".join(["phone", *(f"c{i}" for i in range(199))])
    result = intake.parse_csv(csv_bytes(header, VALID + "," * 150 + "z"))
    assert result.decoded() == [(VALID, {"phone": VALID, "c149": "z"})]


def test_csv_row_over_64_kb_of_data_is_invalid() -> None:
    """Seven cells of 10,000 characters (70 KB) make the row invalid and reported."""
    header = ",".join(["phone", *(f"c{i}" for i in range(7))])
    row = ",".join([VALID, *("x" * 10_000 for _ in range(7))])
    result = intake.parse_csv(csv_bytes(header, row, "+12025550102"))
    assert [(r.row, r.reason) for r in result.invalid] == [(2, "contact data is larger than 64 KB")]
    assert [c[0] for c in result.decoded()] == ["+12025550102"]


def test_json_contact_over_64_kb_names_its_index() -> None:
    """A JSON contact carrying more than 64 KB rejects the list, naming its index."""
    items = [{"phone": VALID}, {"phone": "+12025550102", "blob": "x" * 70_000}]
    with pytest.raises(intake.IntakeError) as caught:
        intake.parse_json_contacts(items)
    assert caught.value.code == "contact_data_too_large"
    assert "index 1" in caught.value.message
    assert caught.value.details["invalidIndexes"] == [1]


# ------------------------------------------------------------------ JSON contacts


def test_json_contacts_keep_custom_fields() -> None:
    """Every key of a contact object is kept as data, including nested values."""
    items: list[Any] = [{"phone": VALID, "name": "Ann", "meta": {"tier": 2}}, {"phone": OTHER}]
    result = intake.parse_json_contacts(items)
    assert result.decoded() == [
        (VALID, {"phone": VALID, "name": "Ann", "meta": {"tier": 2}}),
        (OTHER, {"phone": OTHER}),
    ]


def test_json_contacts_own_zone_is_read_in_any_case_as_a_csv_header_is() -> None:
    """`timeZone` (the API's camelCase) or `TimeZone` is the contact's zone, checked and kept as
    `timezone`, as a CSV header in any case is (it was ignored: the number's zones were used)."""
    items: list[Any] = [{"phone": VALID, "timeZone": "Europe/Paris"}, {"phone": OTHER}]
    assert intake.parse_json_contacts(items).decoded() == [
        (VALID, {"phone": VALID, "timezone": "Europe/Paris"}),
        (OTHER, {"phone": OTHER}),
    ]
    with pytest.raises(intake.IntakeError) as err:
        intake.parse_json_contacts([{"phone": VALID, "TimeZone": "Mars/Olympus"}])
    assert err.value.code == "invalid_timezone"
    # named by `index`, as invalid numbers are (it said `row`)
    assert err.value.details["invalidContacts"] == [
        {"index": 0, "value": "Mars/Olympus", "reason": "not a known IANA time zone"}
    ]


def test_json_duplicates_dropped_and_counted() -> None:
    """A repeated number is kept once (the first) and counted."""
    result = intake.parse_json_contacts([{"phone": VALID, "n": 1}, {"phone": VALID, "n": 2}])
    assert result.decoded() == [(VALID, {"phone": VALID, "n": 1})]
    assert result.duplicates == 1


def test_json_any_invalid_phone_rejects_list_naming_indexes() -> None:
    """One bad number rejects the whole list; the error names each offending index."""
    items: list[Any] = [
        {"phone": VALID},
        {"phone": "2025550101"},
        {"phone": OTHER},
        {"phone": "+1 202"},
    ]
    error = json_error(items)
    assert error.code == "invalid_phone_format"
    assert error.details["invalidIndexes"] == [1, 3]
    assert error.details["invalidCount"] == 2
    assert "1, 3" in error.message
    assert [c["value"] for c in error.details["invalidContacts"]] == ["2025550101", "+1 202"]


def test_json_phone_with_trailing_newline_is_rejected() -> None:
    """JSON phones are not trimmed, so a trailing newline makes the number invalid."""
    assert json_error([{"phone": VALID + "\n"}]).details["invalidIndexes"] == [0]


@pytest.mark.parametrize(
    ("item", "reason_word"),
    [
        ("+12025550101", "object"),
        ([VALID], "object"),
        (None, "object"),
        ({"name": "no phone"}, "missing"),
        ({"phone": 12025550101}, "string"),
        ({"phone": None}, "missing"),
    ],
)
def test_json_non_object_or_phoneless_items_are_rejected(item: Any, reason_word: str) -> None:
    """Items that are not objects with a string phone are rejected by index, with a reason."""
    error = json_error([{"phone": VALID}, item])
    assert error.code == "invalid_phone_format"
    assert error.details["invalidIndexes"] == [1]
    assert reason_word in error.details["invalidContacts"][0]["reason"]


def test_json_many_invalid_indexes_are_capped_in_message_and_details() -> None:
    """With 150 bad items the message shows 20 indexes, details 100, and the count says 150."""
    error = json_error([{"phone": "bad"}] * 150)
    assert error.details["invalidCount"] == 150
    assert error.details["invalidIndexes"] == list(range(100))
    assert error.message.startswith("150 contact(s)")
    assert "19 ..." in error.message and "20," not in error.message


def test_json_empty_list_is_no_valid_contacts() -> None:
    """An empty contacts list -> no_valid_contacts."""
    assert json_error([]).code == "no_valid_contacts"


def test_json_over_10000_valid_contacts_is_too_many() -> None:
    """10,001 distinct valid contacts -> too_many_contacts."""
    items: list[Any] = [{"phone": p} for p in [*phones(intake.MAX_CONTACTS), "+12025560101"]]
    assert json_error(items).code == "too_many_contacts"


def test_json_limit_counts_distinct_contacts_and_rows_stop_at_20000() -> None:
    """10,000 distinct numbers plus a repeat are accepted; more than 20,000 items are not."""
    items: list[Any] = [{"phone": p} for p in [*phones(intake.MAX_CONTACTS), phones(1)[0]]]
    assert len(intake.parse_json_contacts(items).contacts) == intake.MAX_CONTACTS
    many: list[Any] = [{"phone": VALID}] * (intake.MAX_ROWS + 1)
    assert json_error(many).code == "too_many_contacts"


def test_north_american_fast_path_agrees_with_phonenumbers() -> None:
    """+1 numbers skip phonenumbers.parse: the verdict is the library's own for every one."""
    import random

    import phonenumbers

    def reference(value: str) -> bool:
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse(value, None))
        except phonenumbers.NumberParseException:
            return False

    rnd = random.Random(7)
    samples = ["+1" + "".join(rnd.choice("0123456789") for _ in range(10)) for _ in range(20_000)]
    samples += ["+12025550101", "+10235925634", "+11234567890", "+18005550100", "+16045550100"]
    for value in samples:
        assert (intake.e164_problem(value) is None) == reference(value), value


def test_valid_number_agrees_with_phonenumbers_everywhere() -> None:
    """intake.valid_number (each region's patterns compiled once) is the library's own
    is_valid_number: for 30,000 random numbers over every country code, and for the library's
    example number of every region and number type (all valid)."""
    import random

    import phonenumbers
    from phonenumbers import PhoneNumberType

    rnd = random.Random(11)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    checked = valid = 0
    for _ in range(30_000):
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(4, 13)))
        try:
            number = phonenumbers.parse(f"+{rnd.choice(codes)}{digits}", None)
        except phonenumbers.NumberParseException:
            continue
        expected = phonenumbers.is_valid_number(number)
        assert intake.valid_number(number) == expected, number
        checked += 1
        valid += expected
    assert checked > 25_000 and valid > 1_000  # both verdicts well represented
    examples = [
        phonenumbers.example_number_for_type(region, kind)
        for region in sorted(phonenumbers.SUPPORTED_REGIONS)
        for kind in (
            PhoneNumberType.FIXED_LINE,
            PhoneNumberType.MOBILE,
            PhoneNumberType.TOLL_FREE,
            PhoneNumberType.PREMIUM_RATE,
            PhoneNumberType.VOIP,
            PhoneNumberType.UAN,
        )
    ]
    examples += [
        phonenumbers.example_number_for_non_geo_entity(code)
        for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    ]
    found = [e for e in examples if e is not None]
    assert len(found) > 500
    for example in found:
        assert intake.valid_number(example) == phonenumbers.is_valid_number(example), example
        assert phonenumbers.is_valid_number(example)
