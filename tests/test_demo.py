"""The demo page: upload checks, result rendering, and the page driven in headless Chromium."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from socioseg.demo import (
    DemoDependencyError,
    DemoInputError,
    check_inputs,
    example_choices,
    present,
    result_summary,
)
from socioseg.types import Box, ParsedAnswer, Point, Prediction, StageResult, Target
from tests.scripts import load_script


def _save(path: Path, size=(64, 48)) -> str:
    Image.new("RGB", size, (20, 120, 60)).save(path)
    return str(path)


def _prediction(size=(64, 48)) -> Prediction:
    w, h = size
    mask = np.zeros((h, w), dtype=bool)
    mask[10:20, 5:25] = True
    mask[30:40, 40:60] = True
    target = Target(Box(5, 10, 25, 20), (Point(15, 15),))
    parsed = ParsedAnswer('[{"bbox_2d": [5, 10, 25, 20]}]', (target,), ("dropped a box",), True)
    stage1 = StageResult(
        "stage1", "p1", "<think>t</think><answer>a</answer>", parsed, (target,), mask
    )
    stage2 = StageResult("stage2", "p2", "<answer>b</answer>", parsed, (target,), mask)
    feedback = Image.new("RGB", (56, 56))
    return Prediction(
        "the park", "two-stage", mask, stage1, stage2, size, (56, 56), "stage2",
        feedback, feedback, {"stage1_generate": 0.5, "stage2_generate": 0.25},
    )  # fmt: skip


def test_check_inputs_gives_readable_messages(tmp_path):
    sat, map_ = _save(tmp_path / "sat.png"), _save(tmp_path / "map.png")
    (tmp_path / "notes.png").write_text("not an image")
    wide = _save(tmp_path / "wide.png", (200, 48))
    cases = [
        ((None, map_, "q", 10**6), "upload a satellite image"),
        ((sat, str(tmp_path / "notes.png"), "q", 10**6), "not an image"),
        ((sat, map_, "q", 1000), "limit is"),
        ((sat, wide, "q", 10**6), "same aspect ratio"),
        ((sat, map_, "   ", 10**6), "type a query"),
    ]
    for args, message in cases:
        with pytest.raises(DemoInputError, match=message):
            check_inputs(*args)
    images = check_inputs(sat, map_, " the park ", 10**6)
    assert images[0].size == (64, 48) and images[2] == "the park"


def test_present_renders_stages_and_writes_downloads(tmp_path):
    pred = _prediction()
    result = present(pred, Image.new("RGB", (64, 48)), tmp_path)
    # the picture at the satellite's size, above the legend strip
    assert result.final.width == 64 and result.final.height > 48
    assert result.stage2_image.size == result.final.size
    assert result.feedback_map is pred.feedback_map
    assert "<think>t</think>" in result.stage1_text and "dropped a box" in result.stage1_text
    assert "from the stage-2 boxes and points" in result.status
    names = [Path(f).name for f in result.files]
    assert names == ["mask.png", "entities.geojson", "result.json"]
    assert np.array_equal(np.asarray(Image.open(result.files[0])) > 0, pred.mask)
    collection = json.loads(Path(result.files[1]).read_text())
    assert len(collection["features"]) == 2
    assert {f["properties"]["area_px"] for f in collection["features"]} == {200}
    assert len(result.as_outputs()) == 9
    assert "0.75s" in result_summary(pred)


def test_missing_gradio_names_the_extra(monkeypatch):
    from socioseg import demo

    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(DemoDependencyError, match=r"pip install 'socioseg\[demo\]'"):
        demo.build_demo(object())


def test_session_loads_a_factory_once_and_reports_bad_input(tmp_path):
    from socioseg.demo import OUTPUT_ORDER, _Session

    class Fake:
        def segment(self, sat, map_, query, mode):
            return _prediction(sat.size)

    loads = []
    session = _Session(lambda: loads.append(1) or Fake(), max_pixels=10**6)
    sat, map_ = _save(tmp_path / "sat.png"), _save(tmp_path / "map.png")
    progress = lambda *args, **kwargs: None  # noqa: E731
    status = session.run(sat, None, "q", "two-stage", progress)[0]
    assert "upload a map image" in status and not loads
    for _ in range(2):
        values = session.run(sat, map_, "q", "two-stage", progress)
        outputs = dict(zip(OUTPUT_ORDER, values, strict=True))
        assert outputs["status"].startswith("**Done**") and len(outputs["downloads"]) == 3
    assert loads == [1]


@pytest.fixture(scope="module")
def served_demo(tiny_models):
    """The page on 127.0.0.1 with the tiny models; yields ``(url, script module)``."""
    pytest.importorskip("gradio", reason="the demo needs socioseg[demo]")
    pytest.importorskip("playwright", reason="the browser test needs playwright (pip)")
    script = load_script("screenshot_demo")
    if script.find_chromium() is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    from socioseg.demo import run_demo
    from socioseg.models.vlm import SamplingSettings
    from socioseg.socioreasoner import InferenceConfig, SocioReasoner

    config = InferenceConfig(
        min_pixels=56 * 56, max_pixels=224 * 224, sampling=SamplingSettings(max_new_tokens=48)
    )
    reasoner = SocioReasoner.from_pretrained(*map(str, tiny_models), "cpu", config=config)
    port = script.free_port()
    page = run_demo(reasoner, port=port, block=False, max_image_pixels=1_000_000)
    try:
        yield f"http://127.0.0.1:{port}/", script
    finally:
        page.close()


def _upload(page, which: str, path: str) -> None:
    """Replace the file in the page's ``sat`` or ``map`` upload box."""
    clear = page.locator(f"#{which}-file button[aria-label='Clear']")
    if clear.count():
        clear.click()
    page.locator(f"#{which}-file input[type=file]").set_input_files(path)


@pytest.mark.slow
def test_page_segments_an_example_in_chromium(served_demo, tmp_path):
    url, script = served_demo
    label = example_choices()[0][1]
    with script.browser_page() as page:
        script.segment_example(page, url, label)
        assert page.locator("#final-image img").count() == 1
        stage1 = page.locator("#stage1-text textarea").input_value()
        stage2 = page.locator("#stage2-text textarea").input_value()
        assert "Parsed" in stage1 and "Parsed" in stage2
        assert "Done" in page.locator("#status").inner_text()
        downloads = page.locator("#downloads").inner_text()
        assert "mask.png" in downloads and "entities.geojson" in downloads

        # A map of another aspect ratio: a message on the page, no result.
        _upload(page, "map", _save(tmp_path / "wide.png", (900, 300)))
        page.wait_for_selector("#map-view img")
        page.click("#segment-button")
        page.get_by_text("same aspect ratio").wait_for()
        # Not an image at all.
        (tmp_path / "notes.png").write_text("not an image")
        _upload(page, "sat", str(tmp_path / "notes.png"))
        page.get_by_text("is not an image this page can read").wait_for()
        # Over the pixel limit (1 megapixel in this test).
        _upload(page, "sat", _save(tmp_path / "big.png", (1200, 1200)))
        page.get_by_text("the limit is 1 megapixels").wait_for()
        assert "Traceback" not in page.content()


def test_the_page_says_which_kind_of_model_answered(tiny_models):
    from types import SimpleNamespace

    from socioseg.demo import MINI_NOTE, RANDOM_WEIGHTS_NOTE, model_note
    from socioseg.models.sources import MINI_DIR
    from socioseg.models.vlm import VisionLanguageModel

    def reasoner(path):
        return SimpleNamespace(vlm=SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(
            _name_or_path=str(path)))))  # fmt: skip

    assert model_note(reasoner(MINI_DIR / "vlm")) == MINI_NOTE
    assert model_note(reasoner("vvangfaye/SocioReasoner-3B")) == ""
    tiny = VisionLanguageModel.from_pretrained(str(tiny_models[0]), device="cpu")
    assert model_note(SimpleNamespace(vlm=tiny)) == RANDOM_WEIGHTS_NOTE
