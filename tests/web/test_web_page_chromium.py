"""The unsubscribe page as a person sees it: rendered by headless Chromium (Debian `chromium`),
checked on the screenshot's pixels and on the DOM the browser built."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from PIL import Image
from web_support import COMPANY, SECRET, make_project, web_app

from sequencer.core.unsubscribe import make_token
from sequencer.web.pages import BUTTON_COLOUR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (scripts/install-test-services installs it)",
)
DANA = "dana.kim@globex.example"
BUTTON = tuple(int(BUTTON_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
PAGE_BACKGROUND = (0xEE, 0xF1, 0xF5)


async def chromium(tmp_path: Path, url: str, *args: str) -> bytes:
    """Run headless Chromium on ``url`` while this event loop keeps serving the app."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def screenshot(tmp_path: Path, url: str, name: str, size: str = "800,600") -> Image.Image:
    path = tmp_path / f"{name}.png"
    await chromium(tmp_path, url, f"--screenshot={path}", f"--window-size={size}")
    with Image.open(path) as image:
        return image.convert("RGB")


def all_pixels(image: Image.Image) -> list[tuple[int, ...]]:
    """Every pixel of an RGB image as (r, g, b), row by row."""
    raw = image.convert("RGB").tobytes()
    return [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]


def pixels_of(image: Image.Image, colour: tuple[int, ...]) -> list[tuple[int, int]]:
    width = image.size[0]
    return [(i % width, i // width) for i, p in enumerate(all_pixels(image)) if p == colour]


def button_box(image: Image.Image) -> tuple[int, int, int, int]:
    found = pixels_of(image, BUTTON)
    assert len(found) > 2000, f"only {len(found)} pixels of the button colour"
    xs = [x for x, _ in found]
    ys = [y for _, y in found]
    return min(xs), min(ys), max(xs), max(ys)


async def test_the_unsubscribe_page_renders_with_a_visible_button(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with web_app(sqlite_url, make_project(tmp_path / "project")) as web:
        url = f"{web.base}/u/{make_token(SECRET, DANA)}"
        image = await screenshot(tmp_path, url, "confirm")
        dom = (await chromium(tmp_path, url, "--dump-dom")).decode()
        phone = await screenshot(tmp_path, url, "confirm-phone", "375,700")

    assert image.size == (800, 600)
    # Not blank: the page background, a white card, and anti-aliased text in many shades.
    assert image.getpixel((5, 5)) == PAGE_BACKGROUND
    assert len(pixels_of(image, (255, 255, 255))) > 50_000
    assert len(set(all_pixels(image))) > 50
    # The button: a solid block of its colour, button-sized, above the fold, white label.
    left, top, right, bottom = button_box(image)
    assert 90 <= right - left <= 300 and 35 <= bottom - top <= 70, (left, top, right, bottom)
    assert bottom < 600
    label = image.crop((left, top, right + 1, bottom + 1))
    whiteish = [p for p in all_pixels(label) if min(p) > 200]
    assert len(whiteish) > 80, "the button label is not visible on the button"
    # Dark text (heading, explanation) above the button.
    above = image.crop((0, 0, 800, top))
    assert sum(1 for p in all_pixels(above) if max(p) < 90) > 500

    assert "Unsubscribe from these emails?" in dom
    assert COMPANY in dom
    assert "da•••@globex.example" in dom and DANA not in dom
    assert '<button type="submit">Unsubscribe</button>' in dom

    # On a phone the button is still whole and on screen.
    left, top, right, bottom = button_box(phone)
    assert right < 375 and bottom < 700


async def test_the_done_and_not_found_pages_render_without_a_button(
    tmp_path: Path, sqlite_url: str
) -> None:
    async with web_app(sqlite_url, make_project(tmp_path / "project")) as web:
        token = make_token(SECRET, DANA)
        await web.client.post(
            f"/u/{token}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        done = await screenshot(tmp_path, f"{web.base}/u/{token}", "done")
        done_dom = (await chromium(tmp_path, f"{web.base}/u/{token}", "--dump-dom")).decode()
        missing = await screenshot(tmp_path, f"{web.base}/u/{token[:-2]}", "not-found")

    assert "You were already unsubscribed" in done_dom and "<form" not in done_dom
    for image in (done, missing):
        assert image.getpixel((5, 5)) == PAGE_BACKGROUND
        assert len(set(all_pixels(image))) > 30  # text rendered
        assert len(pixels_of(image, BUTTON)) < 50  # no button
