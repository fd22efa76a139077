"""Contact files as spreadsheet tools export them (Excel, Google Sheets, LibreOffice): their
encodings, delimiters, line endings and quoting; phone columns under their usual names; numbers
as people type them, read with `defaultCountry`."""

from __future__ import annotations

import codecs
from typing import Any

import pytest

from dialer import intake

# The same list as people keep it: formatted the way they typed it.
FORMATTED_US = [
    ("+1 202 555 0143", "+12025550143"),
    ("(202) 555-0141", "+12025550141"),
    ("2025550145", "+12025550145"),
    ("12025550152", "+12025550152"),  # Excel dropped the +
    ("202.555.0147", "+12025550147"),
    ("1-202-555-0148", "+12025550148"),
    ("+44 (0)20 7183 8751", "+442071838751"),
    ("+12025550150", "+12025550150"),
]


def rows(*lines: list[str], delimiter: str = ",", newline: str = "\r\n") -> str:
    """Lines of cells joined as a spreadsheet writes them (quoting cells that need it)."""

    def cell(value: str) -> str:
        if any(ch in value for ch in (delimiter, '"', "\n", "\r")):
            return '"' + value.replace('"', '""') + '"'
        return value

    return newline.join(delimiter.join(cell(v) for v in line) for line in lines) + newline


def excel_csv_utf8(text: str) -> bytes:
    """Excel "CSV UTF-8 (Comma delimited)": a BOM, CRLF."""
    return codecs.BOM_UTF8 + text.encode("utf-8")


def excel_csv_windows(text: str) -> bytes:
    """Excel "CSV (Comma delimited)" on Windows: the ANSI code page, Windows-1252."""
    return text.encode("cp1252")


def excel_unicode_text(text: str) -> bytes:
    """Excel "Unicode Text (*.txt)": UTF-16 little-endian with a BOM, tab delimited."""
    return codecs.BOM_UTF16_LE + text.encode("utf-16-le")


# ------------------------------------------------------------------ whole exports


def test_excel_csv_utf8_with_phone_number_header_and_formatted_numbers() -> None:
    """Excel's UTF-8 CSV with a 'Phone Number' column of typed numbers, read as US numbers."""
    text = rows(
        ["Name", "Phone Number"], *[[f"P{i}", raw] for i, (raw, _) in enumerate(FORMATTED_US)]
    )
    result = intake.parse_csv(excel_csv_utf8(text), default_country="US")
    assert [c[0] for c in result.contacts] == [e164 for _, e164 in FORMATTED_US]
    assert result.decoded()[0][1] == {"Name": "P0", "phone": "+12025550143"}
    assert (result.encoding, result.phone_column, result.invalid_count) == (
        "utf-8",
        "Phone Number",
        0,
    )


def test_excel_windows_csv_semicolons_and_accents() -> None:
    """Excel's plain CSV from a European locale: Windows-1252, semicolons, CRLF; accents and
    the euro sign survive."""
    text = rows(
        ["Nom", "Téléphone", "Montant"],
        ["Zoë Ærø", "+33 6 12 34 56 78", "12,50 €"],
        ["Jürgen", "06 12 34 56 79", "3,00 €"],
        delimiter=";",
    )
    with pytest.raises(intake.IntakeError) as caught:  # 'Téléphone' is no usual name
        intake.parse_csv(excel_csv_windows(text), default_country="FR")
    assert caught.value.details["columnsFound"] == ["Nom", "Téléphone", "Montant"]
    result = intake.parse_csv(
        excel_csv_windows(text), default_country="FR", phone_column="téléphone"
    )
    assert result.encoding == "windows-1252"
    assert result.decoded() == [
        ("+33612345678", {"Nom": "Zoë Ærø", "phone": "+33612345678", "Montant": "12,50 €"}),
        ("+33612345679", {"Nom": "Jürgen", "phone": "+33612345679", "Montant": "3,00 €"}),
    ]


@pytest.mark.parametrize("bom", [codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE], ids=["le", "be"])
def test_excel_unicode_text_utf16_tab_delimited(bom: bytes) -> None:
    """Excel's "Unicode Text": UTF-16 with a BOM (either byte order), tab delimited; commas in
    a cell are ordinary characters."""
    text = rows(
        ["Mobile", "Name", "Note"], ["+12025550101", "李雷", "late, after 5"], delimiter="\t"
    )
    codec = "utf-16-le" if bom == codecs.BOM_UTF16_LE else "utf-16-be"
    result = intake.parse_csv(bom + text.encode(codec))
    assert result.encoding == "utf-16" and result.phone_column == "Mobile"
    assert result.decoded() == [
        ("+12025550101", {"phone": "+12025550101", "Name": "李雷", "Note": "late, after 5"})
    ]


def test_google_sheets_export_quoted_commas_and_newlines() -> None:
    """Google Sheets: UTF-8 without BOM, CRLF, quoted cells holding commas and line breaks,
    a 'phone_number' header."""
    text = rows(
        ["phone_number", "name", "address"],
        ["+12025550101", "Ann", "1 Main St,\nApt 2"],
        ["+12025550102", 'Bob "B" Jones', "2 Oak Ave"],
    )
    result = intake.parse_csv(text.encode("utf-8"))
    assert result.phone_column == "phone_number"
    assert [c[1] for c in result.decoded()] == [
        {"phone": "+12025550101", "name": "Ann", "address": "1 Main St,\nApt 2"},
        {"phone": "+12025550102", "name": 'Bob "B" Jones', "address": "2 Oak Ave"},
    ]


def test_libreoffice_export_all_cells_quoted_lf_and_trailing_delimiters() -> None:
    """LibreOffice with "quote all text cells": LF endings, a 'Telephone' header, and trailing
    empty cells past the header (a wider row elsewhere in the sheet)."""
    text = '"Telephone","Name"\n"+12025550101","Ann",,\n"+12025550102","Bob"\n'
    result = intake.parse_csv(text.encode("utf-8"))
    assert [c[1] for c in result.decoded()] == [
        {"phone": "+12025550101", "Name": "Ann"},
        {"phone": "+12025550102", "Name": "Bob"},
    ]


def test_seventeen_row_list_from_the_field() -> None:
    """Without defaultCountry formatted numbers stay invalid (the strict default) and the answer
    warns; with it, every real number is read."""
    typed = [raw for raw, _ in FORMATTED_US] + [
        "+1 (202) 555-0160",
        "202 555 0161",
        "(202)555-0162",
        "+1.202.555.0163",
        "202-555-0164",
        "1 202 555 0165",
        "+12025550166",
        "+12025550167",
        "not a number",
    ]
    assert len(typed) == 17
    data = excel_csv_utf8(rows(["phone"], *[[t] for t in typed]))
    strict = intake.parse_csv(data)
    assert len(strict.contacts) == 3 and strict.invalid_count == 14
    report = intake.invalid_report(strict)
    assert "14 of 17 rows" in report["warning"] and "defaultCountry" in report["warning"]
    lenient = intake.parse_csv(data, default_country="us")
    assert len(lenient.contacts) == 16 and lenient.invalid_count == 1
    assert [(r.row, r.value) for r in lenient.invalid] == [(18, "not a number")]
    assert "warning" not in intake.invalid_report(lenient)


def test_warning_only_when_more_than_half_of_rows_are_invalid() -> None:
    """Exactly half invalid: no warning; one more: a warning. The count is always there."""
    half = intake.parse_csv(rows(["phone"], ["+12025550101"], ["bad"]).encode())
    assert intake.invalid_report(half)["invalidCount"] == 1
    assert "warning" not in intake.invalid_report(half)
    more = intake.parse_csv(rows(["phone"], ["+12025550101"], ["bad"], ["worse"]).encode())
    assert intake.invalid_report(more)["warning"].startswith("2 of 3 rows")


# ------------------------------------------------------------------ pieces


@pytest.mark.parametrize(
    ("data", "encoding", "name"),
    [
        ("phone,name\n+12025550101,Zoë\n".encode(), "utf-8", "Zoë"),
        (codecs.BOM_UTF8 + "phone,name\n+12025550101,Zoë\n".encode(), "utf-8", "Zoë"),
        ("phone,name\n+12025550101,Zoë €\n".encode("cp1252"), "windows-1252", "Zoë €"),
        (b"phone,name\n+12025550101,x\x81y\n", "windows-1252", "x\ufffdy"),
    ],
    ids=["utf8", "utf8-bom", "cp1252", "cp1252-undefined-byte"],
)
def test_encodings(data: bytes, encoding: str, name: str) -> None:
    """UTF-8 with or without BOM; bytes that are not UTF-8 are read as Windows-1252."""
    result = intake.parse_csv(data)
    assert result.encoding == encoding
    assert result.decoded()[0][1]["name"] == name


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [("phone,name", ","), ("phone;name", ";"), ("phone\tname", "\t"), ("phone", ",")],
)
def test_delimiter_from_the_header_line(header: str, delimiter: str) -> None:
    """The delimiter is the one the header line uses most; a one-column file is comma."""
    assert intake.detect_delimiter(f"\n{header}\nx;y,z\tw\n") == delimiter


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("name,PHONE,mobile", "PHONE"),
        ("Phone Number,name", "Phone Number"),
        ("name,phone_number", "phone_number"),
        ("PhoneNumber", "PhoneNumber"),
        ("name,Mobile Number", "Mobile Number"),
        ("Cell,name", "Cell"),
        ("Telephone", "Telephone"),
        ("TEL", "TEL"),
        ("To-Number,name", "To-Number"),
        ("number,mobile", "mobile"),  # aliases in their order of preference
        ("Number,name", "Number"),
    ],
)
def test_phone_column_aliases(header: str, expected: str) -> None:
    """`phone` in any case, else the usual names with case, spaces, _ and - ignored."""
    columns = header.split(",")
    numbers = [f"+1202555010{i}" for i in range(len(columns))]
    result = intake.parse_csv(f"{header}\n{','.join(numbers)}\n".encode())
    assert result.phone_column == expected
    assert result.contacts[0][0] == numbers[columns.index(expected)]


def test_phone_column_named_explicitly_wins() -> None:
    """phoneColumn picks a column even when another has a usual name; unknown: the columns."""
    data = b"phone,Contact Tel\n+12025550101,+12025550102\n"
    result = intake.parse_csv(data, phone_column="Contact Tel")
    assert result.contacts[0][0] == "+12025550102"
    with pytest.raises(intake.IntakeError) as caught:
        intake.parse_csv(data, phone_column="Cellphone")
    assert caught.value.code == "missing_phone_column"
    assert caught.value.details["columnsFound"] == ["phone", "Contact Tel"]


@pytest.mark.parametrize("code", ["XX", "USA", "", "1"])
def test_unknown_default_country_is_refused(code: str) -> None:
    """defaultCountry must be an ISO 3166 alpha-2 code phonenumbers knows, in both modes."""
    with pytest.raises(intake.IntakeError) as caught:
        intake.parse_csv(b"phone\n+12025550101\n", default_country=code)
    assert caught.value.code == "invalid_default_country"
    with pytest.raises(intake.IntakeError) as caught:
        intake.parse_json_contacts([{"phone": "+12025550101"}], default_country=code)
    assert caught.value.code == "invalid_default_country"


@pytest.mark.parametrize(
    "value",
    ["202 555 014", "+1 202 555 0143 ext 12", "call 2025550143", "=2025550143", "202555014399999"],
)
def test_default_country_still_reports_what_is_not_a_number(value: str) -> None:
    """With a default country, what is still not a valid number is reported with a reason."""
    phone, problem = intake.normalize_phone(value, "US")
    assert phone is None and problem


# ------------------------------------------------------------------ JSON


@pytest.mark.parametrize("key", ["phone", "Phone", "phone_number", "phoneNumber", "PHONE NUMBER"])
def test_json_phone_keys(key: str) -> None:
    """JSON contacts name their number phone, phone_number or phoneNumber (any case); it is
    stored as `phone`."""
    result = intake.parse_json_contacts([{key: "+12025550101", "name": "Ann"}])
    assert result.decoded() == [("+12025550101", {"name": "Ann", "phone": "+12025550101"})]


def test_json_default_country_and_phone_column() -> None:
    """defaultCountry reads formatted and numeric phones; phoneColumn names the key."""
    items: list[Any] = [{"tel": "(202) 555-0141"}, {"tel": 2025550142}]
    result = intake.parse_json_contacts(items, default_country="US", phone_column="tel")
    assert [c[0] for c in result.contacts] == ["+12025550141", "+12025550142"]


def test_json_errors_name_the_index_and_never_print_none() -> None:
    """Each refused contact is named by its 0-based `index`; a missing phone reads as missing,
    not as `None`."""
    items: list[Any] = [
        {"phone": "+12025550101"},
        {"Phone": None},
        {"name": "x"},
        None,
        {"phone": []},
    ]
    with pytest.raises(intake.IntakeError) as caught:
        intake.parse_json_contacts(items)
    details = caught.value.details
    assert [c["index"] for c in details["invalidContacts"]] == [1, 2, 3, 4]
    assert all("row" not in c for c in details["invalidContacts"])
    assert "None" not in repr(details) and "None" not in caught.value.message
    assert "missing" in details["invalidContacts"][1]["reason"]
