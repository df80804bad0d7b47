"""The playground with a class-conditional model: class pickers, the grid laid out by class,
interpolation between two classes (Debian's Chromium against a real server subprocess)."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PageLog, write_model
from tests.browser.test_playground import DEFAULT_SCALE, TILE_SCALE, displayed_bytes, wait_ready
from tests.service.conftest import CGAN, GAN, TINY_CLASSES

pytestmark = [pytest.mark.browser, pytest.mark.server]

CLASSES = list(TINY_CLASSES[:3])


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny conditional model (listed first) and an unconditional one."""
    root = tmp_path_factory.mktemp("browser-classes") / "models"
    write_model(root, CGAN, latent_dim=6, height=8, width=8, channels=1, conv=True, num_classes=3)
    write_model(root, GAN, latent_dim=16, height=8, width=8, channels=3, conv=True)
    return root


def api(server_url: str, path: str, body: dict[str, object], accept: str = "image/png") -> bytes:
    response = httpx.post(
        f"{server_url}/v1/models/{CGAN}/{path}", json=body, headers={"accept": accept}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.content


def frame_bytes(page: Page) -> bytes:
    src = page.locator("#interp-frame").get_attribute("src")
    assert src is not None and src.startswith("data:image/png;base64,")
    return base64.b64decode(src.split(",", 1)[1])


def open_page(page: Page, server_url: str) -> None:
    page.goto(server_url + "/")
    expect(page.locator("#model")).to_have_value(CGAN)
    wait_ready(page, "#image-figure", "#grid-figure", "#interp-figure", "#strip-figure")


def test_class_picker_picks_the_class(page: Page, page_log: PageLog, server_url: str) -> None:
    open_page(page, server_url)
    expect(page.locator("#class option")).to_have_text(
        ["any (the seed's class)", *(f"{i} {name}" for i, name in enumerate(CLASSES))]
    )
    expect(page.locator("#class")).to_be_visible()
    # "any": seed 0 is class 0 % 3.
    expect(page.locator("#image")).to_have_attribute("data-class", CLASSES[0])
    page.fill("#seed", "4")
    expect(page.locator("#image")).to_have_attribute("data-class", CLASSES[4 % 3])
    wait_ready(page, "#image-figure")
    assert displayed_bytes(page, "#image") == api(
        server_url, "generate", {"seed": 4, "scale": DEFAULT_SCALE}
    )
    page.select_option("#class", label=f"2 {CLASSES[2]}")
    expect(page.locator("#image")).to_have_attribute("data-class", CLASSES[2])
    wait_ready(page, "#image-figure")
    expect(page.locator("#image-caption")).to_contain_text(CLASSES[2])
    assert displayed_bytes(page, "#image") == api(
        server_url, "generate", {"seed": 4, "class": 2, "scale": DEFAULT_SCALE}
    )
    # An edited latent keeps the picked class (a latent needs one).
    slider = page.locator("#sliders input[type=range]").first
    slider.focus()
    slider.press("ArrowRight")
    expect(page.locator("#image")).to_have_attribute("data-latent", "edited")
    wait_ready(page, "#image-figure")
    expect(page.locator("#image")).to_have_attribute("data-class", CLASSES[2])
    expect(page.locator("#image-error")).to_be_hidden()
    assert page_log.console_errors == [] and page_log.page_errors == []


def test_grid_is_laid_out_by_class(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    expect(page.locator("#grid-columns")).to_have_value("3")
    page.fill("#grid-seed", "10")
    page.fill("#grid-count", "6")
    page.press("#grid-count", "Enter")
    grid = page.locator("#grid")
    expect(grid).to_have_attribute("data-seeds", "10,11,12,13,14,15")
    expect(grid).to_have_attribute("data-classes", "0,1,2,0,1,2")  # column j is class j
    wait_ready(page, "#grid-figure")
    expect(page.locator("#grid-caption")).to_contain_text("columns: " + ", ".join(CLASSES))
    assert displayed_bytes(page, "#grid") == api(
        server_url,
        "generate/batch",
        {"count": 6, "seed": 10, "classes": [0, 1, 2, 0, 1, 2], "columns": 3, "scale": TILE_SCALE},
    )
    # One class for the whole grid.
    page.select_option("#grid-class", label=f"1 {CLASSES[1]}")
    expect(grid).to_have_attribute("data-classes", "1,1,1,1,1,1")
    wait_ready(page, "#grid-figure")
    expect(page.locator("#grid-caption")).to_contain_text(f"all {CLASSES[1]}")
    # Clicking a tile opens its seed as its class.
    box = grid.bounding_box()
    assert box is not None
    grid.click(position={"x": box["width"] * 5 / 6, "y": box["height"] * 3 / 4})
    expect(page.locator("#seed")).to_have_value("15")
    expect(page.locator("#class")).to_have_value("1")
    expect(page.locator("#image")).to_have_attribute("data-class", CLASSES[1])


def test_interpolation_between_two_classes(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    page.fill("#interp-start", "7")
    page.fill("#interp-end", "7")
    page.fill("#interp-steps", "4")
    page.select_option("#interp-start-class", label=f"0 {CLASSES[0]}")
    page.select_option("#interp-end-class", label=f"2 {CLASSES[2]}")
    page.click("#interp-go")
    caption = page.locator("#interp-caption")
    expect(caption).to_contain_text(
        f"seeds 7 \u2192 7 ({CLASSES[0]} \u2192 {CLASSES[2]}), 4 frames"
    )
    wait_ready(page, "#interp-figure", "#strip-figure")
    play = page.locator("#interp-play")
    play.click()  # pause, then scrub to the ends
    expect(play).to_have_attribute("aria-pressed", "false")
    frame = page.locator("#interp-frame")
    position = page.locator("#interp-position")
    position.focus()
    position.press("Home")
    expect(frame).to_have_attribute("data-frame", "0")
    start = frame_bytes(page)
    position.press("End")
    expect(frame).to_have_attribute("data-frame", "3")
    end = frame_bytes(page)
    # The same seed, two classes: the ends are the two classes' images.
    assert start == api(server_url, "generate", {"seed": 7, "class": 0, "scale": DEFAULT_SCALE})
    assert end == api(server_url, "generate", {"seed": 7, "class": 2, "scale": DEFAULT_SCALE})
    assert start != end
    frames = httpx.post(
        f"{server_url}/v1/models/{CGAN}/interpolate",
        json={"start": {"seed": 7, "class": 0}, "end": {"seed": 7, "class": 2}, "steps": 4},
        headers={"accept": "application/json"},
        timeout=30,
    ).json()["frames"]
    assert len({base64.b64decode(f["png_base64"]) for f in frames}) == 4  # a real blend


def test_unconditional_models_hide_the_class_pickers(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    page.select_option("#model", GAN)
    wait_ready(page, "#image-figure", "#grid-figure", "#interp-figure")
    for picker in ("#class", "#grid-class", "#interp-start-class", "#interp-end-class"):
        expect(page.locator(picker)).to_be_hidden()
    expect(page.locator("#image")).to_have_attribute("data-class", "")
    expect(page.locator("#grid-error")).to_be_hidden()
    expect(page.locator("#interp-error")).to_be_hidden()
