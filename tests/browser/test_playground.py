"""The playground in a real browser (Debian's Chromium) against a real server subprocess."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from service.imaging import GRID_PADDING_PX
from service.runtime.card import latent_for_seed
from tests.browser.conftest import PageLog
from tests.browser.harness import running_server
from tests.service.conftest import GAN, VAE
from tests.service.helpers import decode_png

pytestmark = [pytest.mark.browser, pytest.mark.server]

GAN_SIDE_PX, VAE_SIDE_PX = 8, 6
DEFAULT_SCALE = 16  # the page scales images towards 256 px, at most 16 times
TILE_SCALE = 12  # grid and strip tiles towards 96 px: 96 // 8

_READ_IMAGE = """async (selector) => {
    const response = await fetch(document.querySelector(selector).src);
    const bytes = new Uint8Array(await response.arrayBuffer());
    let text = "";
    for (const byte of bytes) text += String.fromCharCode(byte);
    return btoa(text);
}"""


def displayed_bytes(page: Page, selector: str) -> bytes:
    """The bytes behind an <img> on the page, exactly as the browser got them."""
    return base64.b64decode(page.evaluate(_READ_IMAGE, selector))


def natural_size(page: Page, selector: str) -> tuple[int, int]:
    width, height = page.evaluate(
        "(s) => { const i = document.querySelector(s); return [i.naturalWidth, i.naturalHeight]; }",
        selector,
    )
    return int(width), int(height)


def wait_ready(page: Page, *figures: str) -> None:
    for figure in figures:
        expect(page.locator(figure)).to_have_attribute("data-state", "ready")


def open_page(page: Page, server_url: str) -> None:
    page.goto(server_url + "/")
    wait_ready(page, "#image-figure", "#grid-figure", "#interp-figure", "#strip-figure")


def api_png(server_url: str, model: str, **body: object) -> bytes:
    response = httpx.post(f"{server_url}/v1/models/{model}/generate", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def test_page_loads_without_console_errors(page: Page, page_log: PageLog, server_url: str) -> None:
    open_page(page, server_url)
    expect(page).to_have_title("imagegen playground")
    expect(page.locator("#model option")).to_have_text([f"{GAN} (gan)", f"{VAE} (vae)"])
    expect(page.locator("#model-info")).to_contain_text("latent 16")
    expect(page.locator("#image")).to_have_attribute("data-seed", "0")
    expect(page.locator("#image-caption")).to_contain_text("seed 0")
    expect(page.locator("#image-caption")).to_contain_text("ms round trip")
    expect(page.locator("a[href='/docs']").first).to_be_visible()
    for error in ("#page-error", "#image-error", "#grid-error", "#interp-error"):
        expect(page.locator(error)).to_be_hidden()
    assert page_log.console_errors == []
    assert page_log.page_errors == []


def test_controls_are_labelled(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    for control in page.locator("main input, main select, header input, header select").all():
        name = control.evaluate("(e) => e.labels.length ? e.labels[0].textContent.trim() : ''")
        assert name, control.evaluate("(e) => e.outerHTML")


def test_changing_the_seed_changes_the_image(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    first = displayed_bytes(page, "#image")
    assert first == api_png(server_url, GAN, seed=0, scale=DEFAULT_SCALE)

    page.fill("#seed", "5")
    expect(page.locator("#image")).to_have_attribute("data-seed", "5")
    wait_ready(page, "#image-figure")
    second = displayed_bytes(page, "#image")
    assert second != first
    assert second == api_png(server_url, GAN, seed=5, scale=DEFAULT_SCALE)
    pixels = decode_png(second)  # a real PNG of the model's size, times the scale
    assert pixels.shape == (GAN_SIDE_PX * DEFAULT_SCALE, GAN_SIDE_PX * DEFAULT_SCALE, 3)
    assert natural_size(page, "#image") == (GAN_SIDE_PX * DEFAULT_SCALE,) * 2


def test_typing_a_long_seed_shows_the_last_one(page: Page, server_url: str) -> None:
    # Every keystroke may start a request; stale ones are cancelled, the last one wins.
    open_page(page, server_url)
    seed = "9223372036854775807"  # 2**63 - 1: beyond JavaScript's exact integers
    page.fill("#seed", "")
    page.locator("#seed").press_sequentially(seed)
    expect(page.locator("#image")).to_have_attribute("data-seed", seed)
    wait_ready(page, "#image-figure")
    assert displayed_bytes(page, "#image") == api_png(
        server_url, GAN, seed=int(seed), scale=DEFAULT_SCALE
    )


def test_random_seed_from_button_and_key(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    page.click("#random-seed")
    rolled = page.locator("#seed").input_value()
    assert rolled != "0" and 0 <= int(rolled) < 2**63
    expect(page.locator("#image")).to_have_attribute("data-seed", rolled)
    page.locator("body").press("r")
    expect(page.locator("#image")).not_to_have_attribute("data-seed", rolled)

    # Enter on an empty field lets the server draw the seed, which then fills the field.
    page.fill("#seed", "")
    page.press("#seed", "Enter")
    expect(page.locator("#seed")).not_to_have_value("")
    drawn = page.locator("#seed").input_value()
    expect(page.locator("#image")).to_have_attribute("data-seed", drawn)


def test_scale_and_truncation(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    image = page.locator("#image")
    scale = page.locator("#scale")
    scale.focus()
    scale.press("Home")  # by keyboard: scale 1
    expect(image).to_have_attribute("data-scale", "1")
    wait_ready(page, "#image-figure")
    expect(page.locator("#image-caption")).to_contain_text(f"{GAN_SIDE_PX}\u00d7{GAN_SIDE_PX} px")
    assert natural_size(page, "#image") == (GAN_SIDE_PX, GAN_SIDE_PX)

    page.locator("#truncation").fill("0.5")
    expect(page.locator("#truncation-value")).to_have_text("0.50")
    expect(image).to_have_attribute("data-truncation", "0.5")
    wait_ready(page, "#image-figure")
    assert displayed_bytes(page, "#image") == api_png(server_url, GAN, seed=0, truncation=0.5)


def test_latent_sliders_start_at_the_seed_and_move_the_image(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    sliders = page.locator("#sliders input[type=range]")
    expect(sliders).to_have_count(8)
    latent = latent_for_seed(0, 16)
    expect(page.locator("#z-0-value")).to_have_text(f"{latent[0]:.2f}")
    seed_image = displayed_bytes(page, "#image")

    first = sliders.first
    first.focus()
    for _ in range(50):
        first.press("ArrowRight")  # +0.5 on z[0], by keyboard
    expect(page.locator("#image")).to_have_attribute("data-latent", "edited")
    wait_ready(page, "#image-figure")
    expect(page.locator("#image-caption")).to_contain_text("edited latent")
    edited = displayed_bytes(page, "#image")
    assert edited != seed_image
    moved = latent.tolist()
    moved[0] = float(first.input_value())
    assert edited == api_png(server_url, GAN, latent=moved, scale=DEFAULT_SCALE)

    page.click("#reset-latent")
    expect(page.locator("#image")).to_have_attribute("data-latent", "seed")
    wait_ready(page, "#image-figure")
    assert displayed_bytes(page, "#image") == seed_image


def test_switching_model(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    page.select_option("#model", VAE)
    expect(page.locator("#sliders input[type=range]")).to_have_count(4)  # latent_dim 4
    expect(page.locator("#model-info")).to_contain_text(f"{VAE} 1.0.0: VAE")
    wait_ready(page, "#image-figure", "#grid-figure", "#interp-figure")
    side = VAE_SIDE_PX * DEFAULT_SCALE
    expect(page.locator("#image-caption")).to_contain_text(f"{side}\u00d7{side} px")
    png = displayed_bytes(page, "#image")
    assert decode_png(png).shape == (side, side, 1)
    assert png == api_png(server_url, VAE, seed=0, scale=DEFAULT_SCALE)


def test_grid_renders_and_opens_a_seed(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    page.fill("#grid-seed", "100")
    page.fill("#grid-count", "6")
    page.fill("#grid-columns", "3")
    page.press("#grid-columns", "Enter")  # submits the form
    grid = page.locator("#grid")
    expect(grid).to_have_attribute("data-seeds", "100,101,102,103,104,105")
    wait_ready(page, "#grid-figure")
    tile = GAN_SIDE_PX * TILE_SCALE
    size = (3 * tile + 2 * GRID_PADDING_PX, 2 * tile + GRID_PADDING_PX)
    assert natural_size(page, "#grid") == size
    pixels = decode_png(displayed_bytes(page, "#grid"))
    assert pixels.shape == (size[1], size[0], 3)
    expect(page.locator("#grid-caption")).to_contain_text("seeds 100\u2013105")

    box = grid.bounding_box()
    assert box is not None
    grid.click(position={"x": box["width"] * 5 / 6, "y": box["height"] * 3 / 4})  # last tile
    expect(page.locator("#seed")).to_have_value("105")
    expect(page.locator("#image")).to_have_attribute("data-seed", "105")


def test_interpolation_plays_and_saves_a_gif(page: Page, server_url: str) -> None:
    open_page(page, server_url)
    page.fill("#interp-start", "3")
    page.fill("#interp-end", "4")
    page.fill("#interp-steps", "5")
    page.click("#interp-go")
    expect(page.locator("#interp-position")).to_have_attribute("max", "4")
    wait_ready(page, "#interp-figure", "#strip-figure")
    expect(page.locator("#interp-caption")).to_contain_text("seeds 3 \u2192 4, 5 frames")

    tile = GAN_SIDE_PX * TILE_SCALE
    assert natural_size(page, "#interp-strip") == (5 * tile + 4 * GRID_PADDING_PX, tile)
    strip = decode_png(displayed_bytes(page, "#interp-strip"))
    first_tile = strip[:tile, :tile]
    seed_3 = decode_png(api_png(server_url, GAN, seed=3, scale=TILE_SCALE))
    assert (first_tile == seed_3).all()  # the path starts at the start seed's image

    # The player runs by itself (no reduced-motion preference), pauses, and scrubs by keyboard.
    play = page.locator("#interp-play")
    expect(play).to_have_attribute("aria-pressed", "true")
    frame = page.locator("#interp-frame")
    shown = frame.get_attribute("data-frame")
    expect(frame).not_to_have_attribute("data-frame", shown or "")
    play.click()
    expect(play).to_have_attribute("aria-pressed", "false")
    expect(play).to_have_text("Play")
    position = page.locator("#interp-position")
    position.focus()
    position.press("Home")
    expect(frame).to_have_attribute("data-frame", "0")
    position.press("End")
    expect(frame).to_have_attribute("data-frame", "4")
    expect(page.locator("#interp-position-value")).to_have_text("5 / 5")
    src = frame.get_attribute("src")
    assert src is not None and src.startswith("data:image/png;base64,")
    last = base64.b64decode(src.split(",", 1)[1])
    assert decode_png(last).shape == (GAN_SIDE_PX * DEFAULT_SCALE, GAN_SIDE_PX * DEFAULT_SCALE, 3)
    assert last == api_png(server_url, GAN, seed=4, scale=DEFAULT_SCALE)

    with page.expect_download() as download_info:
        page.click("#interp-gif")
    download = download_info.value
    assert download.suggested_filename == f"{GAN}-3-4.gif"
    gif = Image.open(io.BytesIO(Path(download.path()).read_bytes()))
    assert gif.format == "GIF"
    assert gif.info["loop"] == 0
    assert gif.size == (GAN_SIDE_PX * DEFAULT_SCALE,) * 2
    assert getattr(gif, "n_frames", 1) > 1


def test_api_errors_are_shown(page: Page, page_log: PageLog, server_url: str) -> None:
    open_page(page, server_url)
    page.fill("#seed", "-1")
    error = page.locator("#image-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("422 invalid_input")
    expect(error).to_contain_text("seed")
    expect(page.locator("#image-figure")).to_have_attribute("data-state", "error")

    page.fill("#interp-end", str(2**63))
    page.click("#interp-go")
    expect(page.locator("#interp-error")).to_contain_text("422 invalid_input")

    page.fill("#seed", "8")  # a good value clears the error
    expect(error).to_be_hidden()
    expect(page.locator("#image")).to_have_attribute("data-seed", "8")
    assert page_log.page_errors == []


def test_api_key_can_be_pasted(browser: Browser, models_dir: Path, page_log: PageLog) -> None:
    with running_server(models_dir, api_key="s3cret") as base_url:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.on("pageerror", page_log.on_page_error)
            page.goto(base_url + "/")  # the page and its assets need no key
            page_error = page.locator("#page-error")
            expect(page_error).to_contain_text("401 unauthorized")
            expect(page_error).to_contain_text("Paste the server's API key")
            page.fill("#api-key", "s3cret")
            page.press("#api-key", "Tab")  # committing the field reloads the models
            expect(page_error).to_be_hidden()
            wait_ready(page, "#image-figure", "#grid-figure", "#interp-figure")
            expect(page.locator("#image")).to_have_attribute("data-seed", "0")
            page.reload()  # the key stays for this tab
            expect(page.locator("#api-key")).to_have_value("s3cret")
            wait_ready(page, "#image-figure")
        finally:
            context.close()
    assert page_log.page_errors == []
