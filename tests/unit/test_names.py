"""Server names follow Apple's rules and compare after normalisation."""

from __future__ import annotations

import pytest

from core.errors import InvalidName
from core.tokens.names import MAX_NAME_LENGTH, clean_name, normalize_name, safe_filename


def fullwidth(ascii_text: str) -> str:
    """Return the fullwidth form of printable ASCII text (what NFKC folds back)."""
    return "".join(chr(ord(char) + 0xFEE0) for char in ascii_text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Lincoln High MDM", "Lincoln High MDM"),
        ("  Lincoln   High\u3000MDM  ", "Lincoln High MDM"),
        (fullwidth("MY") + " Server", "MY Server"),
        ("Lyc\u0065\u0301e Victor Hugo", "Lycée Victor Hugo"),
        ("mdm.example.edu", "mdm.example.edu"),
        ("Jamf Pro \u00a0 Main", "Jamf Pro Main"),
    ],
)
def test_clean_name_gives_the_display_form(raw: str, expected: str) -> None:
    assert clean_name(raw) == expected


def test_normalize_name_ignores_width_case_and_spacing() -> None:
    assert (
        normalize_name("  " + fullwidth("MY") + "   Server ")
        == normalize_name("my server")
        == "my server"
    )
    assert normalize_name("STRASSE MDM") == normalize_name("straße mdm")
    assert normalize_name("Lyc\u0065\u0301e") == normalize_name("LYCÉE")


def test_different_names_stay_different() -> None:
    assert normalize_name("Server 1") != normalize_name("Server 2")


@pytest.mark.parametrize(
    "raw",
    [
        "Unassigned",
        "unassigned",
        "UNASSIGNED",
        "  Unassigned  ",
        fullwidth("UNASSIGNED"),
        "Reassigned",
        "rEaSsIgNeD",
        "\u3000" + fullwidth("Reassigned") + " ",
    ],
)
def test_reserved_names_are_refused_in_any_form(raw: str) -> None:
    with pytest.raises(InvalidName, match="Apple reserves it") as caught:
        clean_name(raw)
    assert caught.value.field == "name"
    assert "Unassigned" in caught.value.message or "Reassigned" in caught.value.message


def test_names_containing_a_reserved_word_are_fine() -> None:
    assert clean_name("Unassigned devices MDM") == "Unassigned devices MDM"


@pytest.mark.parametrize(
    "raw",
    ["Lab\tServer", "Lab\nServer", "Lab\rServer", "Lab\x00Server", "Lab\x7fServer"],
)
def test_control_characters_are_refused(raw: str) -> None:
    with pytest.raises(InvalidName, match="control characters"):
        clean_name(raw)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ("Lab\u200bX", "U+200B (zero width space)"),
        ("Lab\u2060X", "U+2060 (word joiner)"),
        ("Lab\ue000X", "U+E000 (unnamed)"),
    ],
)
def test_invisible_characters_are_named(raw: str, named: str) -> None:
    with pytest.raises(InvalidName) as refused:
        clean_name(raw)
    assert refused.value.message == (
        f"A server name can't contain invisible or special characters; this one has {named}."
    )


@pytest.mark.parametrize("raw", ["", " ", "   \u3000  ", "\u00a0"])
def test_empty_names_are_refused(raw: str) -> None:
    with pytest.raises(InvalidName, match="Enter a server name"):
        clean_name(raw)


def test_length_limit_counts_characters_after_cleaning() -> None:
    assert MAX_NAME_LENGTH == 64
    assert clean_name("a" * 64) == "a" * 64
    assert clean_name("  " + "é" * 64 + "  ") == "é" * 64
    assert clean_name("a" * 32 + "     " + "b" * 31) == "a" * 32 + " " + "b" * 31
    with pytest.raises(InvalidName, match="at most 64 characters; this one has 65"):
        clean_name("a" * 65)


def test_fullwidth_characters_count_after_nfkc() -> None:
    assert clean_name(fullwidth("A") * 64) == "A" * 64


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Lincoln High MDM", "Lincoln_High_MDM"),
        ("mdm.example.edu", "mdm.example.edu"),
        ("Lycée Victor-Hugo", "Lycee_Victor-Hugo"),
        ("../../etc/passwd", "etc_passwd"),
        (".hidden", "hidden"),
        ("a / b \\ c : d", "a_b_c_d"),
        ("名前", "server"),
        ("", "server"),
        ("...", "server"),
        ("x" * 100, "x" * 64),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_never_empty_hidden_or_long() -> None:
    for name in ["_" * 80, "." + "a" * 70, "a" * 63 + "/" + "b", "-rf *", "\x00\x01"]:
        result = safe_filename(name)
        assert result
        assert not result.startswith((".", "-"))
        assert len(result) <= 64
        assert all(char.isascii() and (char.isalnum() or char in "-_.") for char in result)
