"""Take the playground screenshot for the docs: a real server on a models folder, Chromium.

python -m tests.browser.screenshot --models-dir models --out docs/playground.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.browser.harness import launch_chromium, running_server

TIMEOUT_MS = 60_000


def take_screenshot(
    models_dir: Path,
    out: Path,
    model: str | None = None,
    seed: int = 7,
    interpolate: tuple[int, int] = (7, 42),
    width_px: int = 1400,
) -> None:
    """Open the page on `model` (default: the first), wait for every image, save a PNG."""
    with running_server(models_dir) as base_url, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            context = browser.new_context(
                viewport={"width": width_px, "height": 900},
                color_scheme="light",
                reduced_motion="reduce",  # the player stays on one frame: a stable picture
            )
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(base_url + "/")
            expect(page.locator("#image-figure")).to_have_attribute(
                "data-state", "ready", timeout=TIMEOUT_MS
            )
            if model is not None:
                page.select_option("#model", model)
            page.fill("#seed", str(seed))
            page.press("#seed", "Enter")
            page.fill("#interp-start", str(interpolate[0]))
            page.fill("#interp-end", str(interpolate[1]))
            page.click("#interp-go")
            page.click("#grid-go")
            expect(page.locator("#image")).to_have_attribute(
                "data-seed", str(seed), timeout=TIMEOUT_MS
            )
            for figure in ("#image-figure", "#grid-figure", "#interp-figure", "#strip-figure"):
                expect(page.locator(figure)).to_have_attribute(
                    "data-state", "ready", timeout=TIMEOUT_MS
                )
            # Show a frame from the middle of the path.
            position = page.locator("#interp-position")
            position.focus()
            for _ in range(int(position.get_attribute("max") or "0") // 2):
                position.press("ArrowRight")
            position.blur()  # no focus ring in the picture
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("docs/playground.png"))
    parser.add_argument("--model", default=None, help="model to show (default: the first)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--width", type=int, default=1400, help="viewport width (px)")
    args = parser.parse_args()
    take_screenshot(args.models_dir, args.out, args.model, args.seed, width_px=args.width)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
