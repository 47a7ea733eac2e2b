"""End to end in a real browser: start the server, open the page in headless Chromium, upload
an image and read the labels the page shows.

Needs Playwright for Python and Debian's Chromium at /usr/bin/chromium (Playwright's own
browsers are never downloaded; `.ci/run` installs Chromium when it is missing). Skipped with a
message when either is missing on a developer's machine; under CI (``CI`` set) that is a
failure, so CI never passes without opening the page.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pictag.evaluation.predictor import Predictor

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000

MISSING = f"no Chromium at {CHROMIUM} (Debian: apt install chromium)"
if os.environ.get("CI") and not CHROMIUM.is_file():
    pytest.fail(f"{MISSING}; CI must run the browser test (.ci/run installs it)", pytrace=False)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=MISSING)


@pytest.fixture(scope="module")
def server_url(tiny_run: Path, live_server) -> Iterator[str]:
    with live_server(tiny_run) as url:
        yield url


def test_upload_shows_the_predicted_labels_and_a_heat_map(
    server_url, tiny_run, only_this_server, wait_until
):
    image = sorted((tiny_run.parent / "images").glob("*.png"))[1]
    expected = Predictor.from_run(tiny_run, "cpu").predict(str(image))[0]
    elsewhere: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            # The page must be self-contained: note (and block) any request off this server.
            page.route("**/*", lambda route: only_this_server(route, server_url, elsewhere))
            page.goto(server_url)
            wait_until(page, "document.getElementById('model').textContent.includes('run')")
            page.set_input_files("#file", str(image))
            page.wait_for_selector(".head[data-head='tags']")
            for name, head in expected.heads.items():
                card = page.locator(f".head[data-head='{name}']")
                assert card.locator(".decided-label").all_text_contents() == head.labels
                shown = card.locator(".row").evaluate_all("rows => rows.map(r => r.dataset.label)")
                assert shown == list(head.scores)  # every label, highest score first
                decided = card.locator(".row.decided").evaluate_all(
                    "rows => rows.map(r => r.dataset.label)"
                )
                assert sorted(decided) == sorted(head.labels)
            # Heads with per-label thresholds (the tags) draw them as ticks, and say so.
            tick_hint = "The tick on each bar is that label's threshold."
            tags, colour = (page.locator(f".head[data-head='{n}']") for n in ("tags", "colour"))
            assert tags.locator("p.hint").all_text_contents() == [tick_hint]
            assert tags.locator(".threshold").count() == len(expected.heads["tags"].scores)
            assert colour.locator("p.hint").count() == colour.locator(".threshold").count() == 0
            assert page.locator("#status").text_content().startswith(image.name)
            assert not page.locator("#error").is_visible()

            page.locator(".head[data-head='colour'] button.explain").click()
            heat_map = page.locator(".head[data-head='colour'] img.cam-image")
            heat_map.wait_for()
            wait_until(
                page,
                "document.querySelector(\".head[data-head='colour'] img.cam-image\").naturalWidth"
                " > 0",
            )

            # A bad file is reported on the page, not silently dropped.
            page.set_input_files(
                "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}]
            )
            page.wait_for_selector("#error", state="visible")
            assert "notes.txt" in page.locator("#error").text_content()
        finally:
            browser.close()
    assert elsewhere == []
