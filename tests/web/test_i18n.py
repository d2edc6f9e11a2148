"""Every text shown to people has its Chinese translation."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir

from tianfu.core import i18n

SOURCE = Path(__file__).resolve().parents[2] / "src" / "tianfu"
METHODS = [("**.py", "python"), ("**.html", "jinja2")]
OPTIONS = {"**.html": {"extensions": "jinja2.ext.i18n"}}


def test_every_message_has_a_chinese_translation() -> None:
    catalogue = i18n.translations("zh_CN")
    missing = []
    for filename, _line, message, _comments, _context in extract_from_dir(
        str(SOURCE), METHODS, options_map=OPTIONS, keywords={"_": None, "N_": None, "gettext_": None}
    ):
        text = message if isinstance(message, str) else message[0]
        if catalogue.gettext(text) == text:
            missing.append(f"{filename}: {text}")
    assert missing == [], "run `make i18n` and translate these in locale/zh_CN/LC_MESSAGES/messages.po"


def test_language_switch_changes_texts() -> None:
    i18n.set_language("en")
    assert i18n._("Patients") == "Patients"
    i18n.set_language("zh_CN")
    assert i18n._("Patients") == "患者"
    i18n.set_language("xx")
    assert i18n.current_language() == "zh_CN"
