"""Screenshot the demo page after segmenting a bundled example (the README's docs/demo.png).

Serves ``socioseg demo`` on 127.0.0.1, drives it in headless Chromium (Playwright with the
system's ``chromium``), picks an example, presses Segment and saves a full-page screenshot.
Without ``--vlm``/``--sam`` it uses the packaged socioseg-mini (offline); ``--tiny`` uses the
random-weight test models instead. tests/test_demo.py drives the page with the same functions.

    python scripts/screenshot_demo.py --example 2 --greedy --out docs/demo.png
    python scripts/screenshot_demo.py --vlm vvangfaye/SocioReasoner-3B --device cuda
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULT_TIMEOUT_MS = 180_000


def find_chromium() -> str | None:
    """Path of a system Chromium, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A Playwright page in headless system Chromium with a fresh profile."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": width, "height": height},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def segment_example(page, url: str, example_label: str) -> None:
    """Open the page, pick the example with this label, press Segment, wait for the result."""
    page.goto(url)
    page.wait_for_selector("#segment-button")
    page.get_by_text(example_label, exact=True).click()
    # Both previews shown: the example's files are in the inputs.
    page.wait_for_selector("#sat-view img", timeout=RESULT_TIMEOUT_MS)
    page.wait_for_selector("#map-view img", timeout=RESULT_TIMEOUT_MS)
    page.click("#segment-button")
    page.wait_for_function(
        "() => document.querySelector('#stage1-text textarea')?.value.length > 0"
        " && document.querySelector('#final-image img') !== null",
        timeout=RESULT_TIMEOUT_MS,
    )


def tiny_reasoner(model_dir: Path, vlm_family: str = "qwen2_5_vl"):
    """A SocioReasoner over freshly built tiny models (policy of ``vlm_family``), set up to
    answer fast on CPU."""
    from socioseg.models.builders import build_tiny_family_models
    from socioseg.models.vlm import SamplingSettings
    from socioseg.socioreasoner import InferenceConfig, SocioReasoner

    vlm_dir, sam_dir = build_tiny_family_models(model_dir, vlm_family)
    config = InferenceConfig(
        min_pixels=56 * 56, max_pixels=336 * 336, sampling=SamplingSettings(max_new_tokens=64)
    )
    return SocioReasoner.from_pretrained(str(vlm_dir), str(sam_dir), "cpu", config=config)


def main() -> None:
    from socioseg.models.families import POLICIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/demo.png"))
    parser.add_argument("--vlm", default="mini", help="VLM hub id or folder (default: mini)")
    parser.add_argument("--sam", help="SAM2 hub id or folder (default: mini with --vlm mini, "
                        "else SAM2-large)")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="the random-weight test models")
    parser.add_argument(
        "--vlm-family",
        choices=tuple(POLICIES),
        default="qwen2_5_vl",
        help="policy architecture of the --tiny models",
    )
    parser.add_argument("--greedy", action="store_true", help="greedy decoding")
    parser.add_argument("--device", default=None)
    parser.add_argument("--example", type=int, default=0, help="index of the bundled example")
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()

    from PIL import Image

    from socioseg.demo import example_choices, run_demo

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            reasoner = tiny_reasoner(Path(tmp), args.vlm_family)
        else:
            from socioseg.socioreasoner import DEFAULT_SAM, SocioReasoner

            sam = args.sam or ("mini" if args.vlm == "mini" else DEFAULT_SAM)
            reasoner = SocioReasoner.from_pretrained(args.vlm, sam, args.device)
            if args.greedy:
                sampling = replace(reasoner.config.sampling, greedy=True)
                reasoner.config = replace(reasoner.config, sampling=sampling)
        port = free_port()
        page = run_demo(reasoner, port=port, block=False)
        try:
            with browser_page(args.width) as browser:
                label = example_choices()[args.example][1]
                segment_example(browser, f"http://127.0.0.1:{port}/", label)
                browser.wait_for_timeout(1000)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                browser.screenshot(path=str(args.out), full_page=True)
        finally:
            page.close()
    # 256 colours keep the README image a few hundred KB instead of over a megabyte.
    shot = Image.open(args.out).convert("RGB")
    shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        args.out, optimize=True
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
