"""The web page's decided labels ("pills") are a read-out, not controls: nothing about them
suggests a click that does nothing (issue 15: they looked like buttons)."""

from __future__ import annotations

import re
from importlib import resources

PAGE = resources.files("pictag.serving").joinpath("page.html").read_text(encoding="utf-8")
STYLE = PAGE.split("<style>")[1].split("</style>")[0]
SCRIPT = PAGE.split("<script>")[1].split("</script>")[0]


def _rules(selector_word: str) -> dict[str, str]:
    """Selector -> declarations of each CSS rule whose selector mentions ``selector_word``."""
    style = re.sub(r"/\*.*?\*/", "", STYLE, flags=re.S)
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", style)
    return {sel.strip(): body for sel, body in rules if selector_word in sel}


def test_the_pills_are_spans_with_no_click_handler():
    made = re.findall(r'el\("(\w+)", \{ class: "chip[^"]*" \}', SCRIPT)
    assert made == ["span"]
    assert "chip" not in PAGE.split("<body>")[1].split("<script>")[0]  # none in the markup
    handlers = re.findall(r"(\w+)\.addEventListener", SCRIPT)
    assert not any("chip" in h or "pill" in h or "label" in h.lower() for h in handlers)


def test_the_pills_are_not_styled_as_buttons():
    rules = _rules(".chip")
    assert ".chip" in rules
    assert not [sel for sel in rules if ":hover" in sel or ":active" in sel or ":focus" in sel]
    for selector, body in rules.items():
        assert "pointer" not in body, selector
    chip = rules[".chip"]
    assert re.search(r"cursor:\s*default", chip)  # text cursor or arrow, never a hand
    # a filled, rounded badge is what read as a button: plain coloured text instead
    assert not re.search(r"background|border", chip), chip


def test_the_hint_asks_to_click_what_reacts():
    hint = re.sub(r"\s+", " ", PAGE.split('<p class="hint">Click')[1].split("</p>")[0])
    assert "click a label to" not in PAGE.lower()  # the pills, which do nothing
    assert hint.startswith(" a label's score row")  # the rows (cursor: pointer) do
