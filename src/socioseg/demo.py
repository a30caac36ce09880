"""A Gradio page for SocioReasoner: upload (or pick) a satellite + map pair, ask, inspect.

The page shows every step of render-and-refine: the stage-1 reasoning and boxes with the coarse
SAM mask, the two rendered stage-2 inputs, the stage-2 reasoning and points, and the final mask
over the satellite image, with the mask (PNG) and its polygons (GeoJSON, pixel coordinates) to
download. Gradio is the optional extra ``socioseg[demo]`` and is imported only here, on use.

Uploads are checked before any model runs (readable image, pixel limit, map and satellite of
one aspect ratio); a failed check is a message on the page.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from socioseg.geometry import check_same_aspect
from socioseg.models.builders import has_random_weights
from socioseg.types import MODES, Prediction

DEMO_INSTALL_HINT = "pip install 'socioseg[demo]'"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Inputs are resized to at most 1344 x 1344 for the VLM and 1024 x 1024 for SAM, so larger
# images only cost memory; the limit keeps one upload from exhausting the server.
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000
DEFAULT_MAX_FILE_SIZE = "50mb"
# Gradio keeps every upload in its cache: every 10 minutes, delete those older than an hour
# (and all of them when the server stops).
DELETE_CACHE = (600, 3600)
IMAGE_HEIGHT = 360
FINAL_HEIGHT = 520
FINAL_SOURCE_NOTES = {
    "stage2": "from the stage-2 boxes and points",
    "stage1": "the stage-1 coarse mask (mode `stage1`)",
    "single-stage": "from the single-stage boxes and points",
    "empty": "empty: stage 2 gave no usable object (the released behaviour)",
    "stage1-fallback": "the stage-1 mask: stage 2 gave no usable object (fallback on)",
}


class DemoInputError(ValueError):
    """An upload or query the page cannot use; the message is shown on the page."""


class DemoDependencyError(ImportError):
    """Gradio is not installed; the message says how to install it."""


def _gradio():
    try:
        import gradio
    except ImportError as error:
        raise DemoDependencyError(f"the demo needs Gradio: {DEMO_INSTALL_HINT}") from error
    return gradio


def open_upload(path: str | Path | None, name: str, max_pixels: int) -> Image.Image:
    """An uploaded file as an RGB image, or :class:`DemoInputError` saying what is wrong.

    Read by :func:`socioseg.images.read_image`: the pixel count is checked from the header,
    before the image is decoded.
    """
    from socioseg.images import ImageError, read_image

    if not path:
        raise DemoInputError(f"Please upload a {name} (or pick an example).")
    filename = Path(path).name
    try:
        return read_image(path, filename, max_pixels=max_pixels)
    except ImageError as error:
        if error.kind == "too-large":
            raise DemoInputError(
                f"The {name} `{filename}` is too large: the limit is "
                f"{max_pixels / 1e6:.0f} megapixels. Please upload a smaller image."
            ) from error
        if error.kind == "depth":
            raise DemoInputError(f"The {name} {error}.") from error
        raise DemoInputError(
            f"The {name} `{filename}` is not an image this page can read (PNG, JPEG, TIFF, ...)."
        ) from error


def check_inputs(
    sat_path: str | None, map_path: str | None, query: str | None, max_pixels: int
) -> tuple[Image.Image, Image.Image, str]:
    """Validate one request; returns ``(sat, map, query)`` or raises :class:`DemoInputError`."""
    sat = open_upload(sat_path, "satellite image", max_pixels)
    map_ = open_upload(map_path, "map image", max_pixels)
    try:
        check_same_aspect(sat.size, map_.size, "the satellite image", "the map image")
    except ValueError as error:
        raise DemoInputError(f"{str(error)[0].upper()}{str(error)[1:]}.") from error
    query = (query or "").strip()
    if not query:
        raise DemoInputError("Please type a query, e.g. “the railway station”.")
    return sat, map_, query


def stage_text(stage) -> str:
    """A stage's raw response followed by what was parsed from it (satellite pixels)."""
    if stage is None:
        return ""
    from socioseg.outputs import stage_to_json

    info = stage_to_json(stage)
    lines = [stage.response.strip(), "", f"Parsed {len(info['targets_image'])} target(s)"]
    lines += [f"  {json.dumps(t)}" for t in info["targets_image"]]
    lines += [f"Problem: {p}" for p in info["problems"]]
    return "\n".join(lines)


RANDOM_WEIGHTS_NOTE = (
    "⚠️ **Random-weight test models** (`socioseg tiny-models`): the masks and reasoning are "
    "meaningless. Start the page with `--vlm vvangfaye/SocioReasoner-3B` for real results.  \n"
)


MINI_NOTE = (
    "ℹ️ **socioseg-mini** (`--vlm mini`): a 5M-parameter model trained on synthetic cities "
    "(docs/mini.md in the repository); it has never seen a real place. Start the page with "
    "`--vlm vvangfaye/SocioReasoner-3B --sam facebook/sam2-hiera-large-hf` for real results.  \n"
)


def model_note(reasoner) -> str:
    """What the page says above each result about the loaded models ("" for real ones)."""
    from socioseg.models.sources import is_packaged_mini

    if has_random_weights(reasoner):
        return RANDOM_WEIGHTS_NOTE
    model = getattr(getattr(reasoner, "vlm", None), "model", None)
    return MINI_NOTE if is_packaged_mini(model) else ""


def result_summary(pred: Prediction) -> str:
    """Markdown line(s) describing where the final mask came from and how long it took."""
    note = FINAL_SOURCE_NOTES.get(pred.final_source, pred.final_source)
    pixels = int(pred.mask.sum())
    share = 100 * pixels / max(1, pred.mask.size)
    total = sum(pred.timings.values())
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in pred.timings.items())
    return (
        f"**Done** ({pred.mode}). Final mask {note}: {pixels} px ({share:.1f}% of the image).  \n"
        f"Time {total:.2f}s: {steps}."
    )


OUTPUT_ORDER = (
    "status",
    "final",
    "stage1_text",
    "stage1_image",
    "feedback_map",
    "feedback_sat",
    "stage2_text",
    "stage2_image",
    "downloads",
)


@dataclass(frozen=True)
class DemoResult:
    """Everything the page shows for one request (images in satellite or VLM frame)."""

    status: str
    final: Image.Image | None = None
    stage1_text: str = ""
    stage1_image: Image.Image | None = None
    feedback_map: Image.Image | None = None
    feedback_sat: Image.Image | None = None
    stage2_text: str = ""
    stage2_image: Image.Image | None = None
    files: tuple[str, ...] = ()

    def as_outputs(self) -> tuple[Any, ...]:
        """Values in :data:`OUTPUT_ORDER` (the page's output components)."""
        values = {**self.__dict__, "downloads": list(self.files) or None}
        return tuple(values[name] for name in OUTPUT_ORDER)


def present(pred: Prediction, sat: Image.Image, out_dir: Path) -> DemoResult:
    """Render a prediction for the page and write its downloads into ``out_dir``.

    Downloads: ``mask.png`` (0/255), ``entities.geojson`` (polygons in satellite pixel
    coordinates) and ``result.json`` (responses, parsed targets, timings).
    """
    from socioseg.outputs import write_prediction
    from socioseg.region.raster import mask_geojson
    from socioseg.render import render_overlay

    written = write_prediction(pred, sat, out_dir)
    geojson = out_dir / "entities.geojson"
    geojson.write_text(json.dumps(mask_geojson(pred.mask, pred.query)) + "\n")
    s1, s2 = pred.stage1, pred.stage2
    return DemoResult(
        status=result_summary(pred),
        final=render_overlay(sat, pred.mask, (s2 or s1).targets_image, legend=True),
        stage1_text=stage_text(s1),
        stage1_image=render_overlay(sat, s1.mask, s1.targets_image, legend=True),
        feedback_map=pred.feedback_map,
        feedback_sat=pred.feedback_sat,
        stage2_text=stage_text(s2),
        stage2_image=None
        if s2 is None
        else render_overlay(sat, s2.mask, s2.targets_image, legend=True),
        files=(str(written["mask"]), str(geojson), str(written["result"])),
    )


class _Session:
    """The reasoner (loaded on first use when given a factory) and a scratch folder."""

    def __init__(self, reasoner, max_pixels: int):
        self._reasoner = reasoner if hasattr(reasoner, "segment") else None
        self._factory: Callable[[], Any] | None = None if self._reasoner else reasoner
        self._lock = threading.Lock()
        self.max_pixels = max_pixels
        self.scratch = Path(tempfile.mkdtemp(prefix="socioseg-demo-"))
        atexit.register(shutil.rmtree, self.scratch, ignore_errors=True)

    def reasoner(self, progress) -> Any:
        with self._lock:
            if self._reasoner is None:
                progress(0.02, desc="Loading models (first request only)")
                self._reasoner = self._factory()
            return self._reasoner

    def run(self, sat_path, map_path, query, mode, progress) -> tuple[Any, ...]:
        try:
            sat, map_, query = check_inputs(sat_path, map_path, query, self.max_pixels)
        except DemoInputError as error:
            return DemoResult(status=f"⚠️ {error}").as_outputs()
        reasoner = self.reasoner(progress)
        progress(0.1, desc=f"Reasoning ({mode}): VLM and SAM at work")
        pred = reasoner.segment(sat, map_, query, mode=mode)
        progress(0.9, desc="Rendering results")
        result = present(pred, sat, self.scratch / uuid.uuid4().hex)
        note = model_note(reasoner)
        if note:
            result = replace(result, status=note + result.status)
        return result.as_outputs()

    def preview(self, path, name) -> tuple[Image.Image | None, str]:
        if not path:
            return None, ""
        try:
            return open_upload(path, name, self.max_pixels), ""
        except DemoInputError as error:
            return None, f"⚠️ {error}"


def example_choices() -> list[tuple[list[str], str]]:
    """The bundled examples as ``([sat_path, map_path, query], label)``; label ``level: query
    (example name)``, unique (two examples may ask the same query)."""
    from socioseg.data.dataset import FOLDER_FILES
    from socioseg.data.examples import examples, load_example

    choices = []
    for folder in examples():
        sample = load_example(folder.name)
        files = [str(folder / FOLDER_FILES[key]) for key in ("sat", "map")]
        choices.append(([*files, sample.query], f"{sample.level}: {sample.query} ({folder.name})"))
    return choices


def _layout(gr) -> dict[str, Any]:
    """Create the page's components (inside an open ``gr.Blocks``); returns them by name."""
    c: dict[str, Any] = {}
    gr.Markdown(
        "## SocioReasoner: urban socio-semantic segmentation\n"
        "Upload a satellite image and the web-map image of the same area, or pick an example, "
        "then ask for an urban entity by name, class or function."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            c["sat_file"] = gr.File(
                label="Satellite image", file_types=["image"], height=110, elem_id="sat-file"
            )
            c["map_file"] = gr.File(
                label="Map image", file_types=["image"], height=110, elem_id="map-file"
            )
            c["query"] = gr.Textbox(label="Query", placeholder="e.g. the railway station")
            c["mode"] = gr.Radio(list(MODES), value="two-stage", label="Mode")
            c["run"] = gr.Button("Segment", variant="primary", elem_id="segment-button")
            c["status"] = gr.Markdown(elem_id="status")
        c["sat_view"] = gr.Image(
            label="Satellite", interactive=False, height=IMAGE_HEIGHT, elem_id="sat-view"
        )
        c["map_view"] = gr.Image(
            label="Map", interactive=False, height=IMAGE_HEIGHT, elem_id="map-view"
        )
    choices = example_choices()
    if choices:
        inputs = [c["sat_file"], c["map_file"], c["query"]]
        rows, labels = [row for row, _ in choices], [label for _, label in choices]
        gr.Examples(rows, inputs, example_labels=labels, label="Examples")
    with gr.Row(equal_height=False):
        c["final"] = gr.Image(
            label="Final mask over the satellite image",
            elem_id="final-image",
            height=FINAL_HEIGHT,
            scale=2,
        )
        c["downloads"] = gr.File(
            label="Downloads: mask.png, entities.geojson (pixels), result.json",
            file_count="multiple",
            elem_id="downloads",
            scale=1,
        )
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### 1. Localise: boxes and coarse SAM mask")
            c["stage1_image"] = gr.Image(label="Stage-1 boxes and coarse mask", height=IMAGE_HEIGHT)
            c["stage1_text"] = gr.Textbox(label="Stage-1 reasoning", lines=8, elem_id="stage1-text")
        with gr.Column():
            gr.Markdown("### 2. Render: the images stage 2 reads")
            c["feedback_map"] = gr.Image(label="Rendered map", height=IMAGE_HEIGHT)
            c["feedback_sat"] = gr.Image(label="Rendered satellite", height=IMAGE_HEIGHT)
        with gr.Column():
            gr.Markdown("### 3. Refine: points and final mask")
            c["stage2_image"] = gr.Image(label="Stage-2 boxes and points", height=IMAGE_HEIGHT)
            c["stage2_text"] = gr.Textbox(label="Stage-2 reasoning", lines=8, elem_id="stage2-text")
    return c


def build_demo(reasoner, *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """The page as a ``gradio.Blocks`` (not launched).

    Args:
        reasoner: a ``SocioReasoner`` (anything with ``segment(sat, map, query, mode=...)``), or
            a zero-argument callable returning one, called on the first request.
        max_image_pixels: uploads with more pixels are refused with a message.
    """
    gr = _gradio()
    session = _Session(reasoner, max_image_pixels)
    with gr.Blocks(
        title="SocioReasoner demo", analytics_enabled=False, delete_cache=DELETE_CACHE
    ) as page:
        c = _layout(gr)
        for key, name in (("sat", "satellite image"), ("map", "map image")):
            c[f"{key}_file"].change(
                lambda path, name=name: session.preview(path, name),
                c[f"{key}_file"],
                [c[f"{key}_view"], c["status"]],
            )

        def segment(sat_path, map_path, text, chosen_mode, progress=gr.Progress()):  # noqa: B008
            return session.run(sat_path, map_path, text, chosen_mode, progress)

        inputs = [c[k] for k in ("sat_file", "map_file", "query", "mode")]
        outputs = [c[k] for k in OUTPUT_ORDER]
        c["run"].click(segment, inputs, outputs, concurrency_limit=1)
        c["query"].submit(segment, inputs, outputs, concurrency_limit=1)
    return page


def run_demo(
    reasoner,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE,
    block: bool = True,
):
    """Serve the page on ``host:port`` (127.0.0.1 unless told otherwise).

    ``reasoner`` as in :func:`build_demo`. With ``block=False`` it returns at once; stop the
    server with ``page.close()``. With ``block=True`` it serves until Ctrl-C or SIGTERM, then
    closes the server (Gradio deletes its upload cache) and returns; the scratch folder goes
    when the process exits. Returns the ``gradio.Blocks`` page.
    """
    stop = threading.Event()
    handle_term = block and threading.current_thread() is threading.main_thread()
    if handle_term:
        # By default SIGTERM kills the process with the scratch folder and the cache left
        # behind; here it only asks the loop below to stop, even mid-launch.
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        page = build_demo(reasoner, max_image_pixels=max_image_pixels)
        page.queue(default_concurrency_limit=1)
        page.launch(
            server_name=host,
            server_port=port,
            max_file_size=max_file_size,
            prevent_thread_lock=True,
            footer_links=[],
            quiet=not block,
        )
        if block:
            _serve_until_stopped(page, stop)
    finally:
        if handle_term:
            signal.signal(signal.SIGTERM, previous)
    return page


def _serve_until_stopped(page, stop: threading.Event) -> None:
    """Wait for ``stop`` (SIGTERM) or Ctrl-C, then close the server."""
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is a normal way to stop
            while not stop.wait(0.2):
                continue
    finally:
        page.close()
