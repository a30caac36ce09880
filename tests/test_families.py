"""Model families: each family's frame and pixels equal transformers' own processor, answers in
its coordinate convention land on the right pixels, and its tiny models run the method."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from socioseg import engine
from socioseg.geometry import Frames
from socioseg.models.builders import build_tiny_policy, build_tiny_segmenter
from socioseg.models.families import POLICIES, QWEN3_VL, SEGMENTERS
from socioseg.models.processor import VLMProcessor
from socioseg.models.segmenter import Segmenter
from socioseg.models.vlm import Generation, SamplingSettings, VisionLanguageModel
from socioseg.socioreasoner import InferenceConfig, SocioReasoner
from socioseg.train.rewards import stage1_rewards
from tests.conftest import noise_image
from tests.test_engine import Counter
from tests.test_trainer import config as trainer_config
from tests.test_trainer import trainer

# The published checkpoints' preprocessor_config.json values (Hub: Qwen/Qwen2.5-VL-3B-Instruct,
# Qwen/Qwen3-VL-4B-Instruct, Qwen/Qwen3.5-2B): patch, merge, mean, std.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PUBLISHED = {
    "qwen2_5_vl": (14, 2, CLIP_MEAN, CLIP_STD),
    "qwen3_vl": (16, 2, [0.5] * 3, [0.5] * 3),
    "qwen3_5": (16, 2, [0.5] * 3, [0.5] * 3),
}
MIN_PIXELS, MAX_PIXELS = 32 * 32, 160 * 160
GREEDY = SamplingSettings(greedy=True, max_new_tokens=6)


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory):
    """Tiny model folders ``(vlm_dir, sam_dir)`` per family pair, built on first use."""
    root = tmp_path_factory.mktemp("families")

    def get(vlm_family: str, sam_family: str = "sam2"):
        vlm_dir, sam_dir = root / vlm_family, root / sam_family
        if not vlm_dir.exists():
            build_tiny_policy(vlm_dir, vlm_family)
        if not sam_dir.exists():
            build_tiny_segmenter(sam_dir, sam_family)
        return vlm_dir, sam_dir

    return get


@pytest.fixture(scope="module")
def family_models(family_folders):
    """Tiny (policy, segmenter) per family pair, loaded as real checkpoints are."""
    loaded = {}

    def get(vlm_family: str, sam_family: str = "sam2"):
        if (vlm_family, sam_family) not in loaded:
            vlm_dir, sam_dir = family_folders(vlm_family, sam_family)
            loaded[vlm_family, sam_family] = (
                VisionLanguageModel.from_pretrained(str(vlm_dir), device="cpu"),
                Segmenter.from_pretrained(str(sam_dir), device="cpu"),
            )
        return loaded[vlm_family, sam_family]

    return get


@pytest.mark.parametrize("family", list(POLICIES))
def test_frame_and_pixels_equal_transformers_processor_on_200_sizes(family_models, family):
    """Our path (family frame rule -> resize into the frame -> processor) against
    transformers' Qwen2VLImageProcessorPil configured as the published checkpoint.

    Sides start at 24 px: below half the factor, geometry.smart_resize keeps qwen-vl-utils'
    ``max(factor, ...)`` (the released system's rule) where transformers rounds to 0 first.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    patch, merge, mean, std = PUBLISHED[family]
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    reference = Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=merge, image_mean=mean, image_std=std, size=size
    )
    vlm, _ = family_models(family)
    ours = VLMProcessor.build(vlm.processor.tokenizer, MIN_PIXELS, MAX_PIXELS, vlm.family)
    rng = np.random.default_rng(23)
    for _ in range(200):
        width, height = (int(v) for v in rng.integers(24, 400, 2))
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        frames = Frames.for_image((width, height), MIN_PIXELS, MAX_PIXELS, vlm.family.factor)
        _, resized = engine.vlm_images(image, image, frames)
        mine = ours.image_processor(images=[resized], return_tensors="pt")
        theirs = reference(images=[image], return_tensors="pt")
        grid = theirs["image_grid_thw"][0].tolist()
        assert mine["image_grid_thw"][0].tolist() == grid, (width, height)
        assert frames.vlm_size == (grid[2] * patch, grid[1] * patch)
        assert torch.equal(mine["pixel_values"], theirs["pixel_values"]), (width, height)


class Recording:
    """A segmenter that records the targets it is prompted with (VLM frame)."""

    def __init__(self, inner):
        self.inner = inner
        self.prompted = []

    def embed(self, image):
        return self.inner.embed(image)

    def segment_scored(self, embedding, targets):
        self.prompted.append(list(targets))
        return self.inner.segment_scored(embedding, targets)


class Scripted(VisionLanguageModel):
    def __init__(self, base, responses):
        super().__init__(base.model, base.processor, name="scripted")
        self.responses = list(responses)

    def generate(self, inputs, sampling, group_size=1):
        return [Generation(text, ()) for text in self.responses.pop(0)]


@pytest.mark.parametrize("sam_family", list(SEGMENTERS))
def test_relative_answer_lands_on_the_right_pixels(family_models, sam_family):
    """Qwen3-VL answers 0-1000 on each axis: x 250 of a 200 px wide image is pixel 50."""
    base, segmenter = family_models("qwen3_vl", sam_family)
    stage1 = '<think>t</think><answer>[{"bbox_2d": [250, 500, 750, 1000]}]</answer>'
    stage2 = (
        '<think>t</think><answer>[{"bbox_2d": [250, 500, 750, 1000], '
        '"points": [[500, 750]]}]</answer>'
    )
    recording = Recording(segmenter)
    config = InferenceConfig(min_pixels=56 * 56, max_pixels=256 * 256)
    reasoner = SocioReasoner(Scripted(base, [[stage1], [stage2]]), recording, config)
    pred = reasoner.segment(noise_image(200, 150, 1), noise_image(200, 150, 2), "Zoo")
    # 200 x 150 -> round to multiples of 32: 192 x 160.
    assert pred.vlm_size == (192, 160)
    assert pred.stage1.targets_image[0].box.as_list() == pytest.approx([50, 75, 150, 150])
    assert pred.stage2.targets_image[0].points[0].as_list() == pytest.approx([100, 112.5])
    box_vlm = recording.prompted[0][0].box.as_list()
    assert box_vlm == pytest.approx([48, 80, 144, 160])
    assert recording.prompted[1][0].points[0].as_list() == pytest.approx([96, 120])
    assert pred.stage1.parsed.problems == ()  # 1000 is on the frame's edge, not past it


def test_released_family_keeps_absolute_vlm_pixels(family_models):
    base, segmenter = family_models("qwen2_5_vl")
    stage1 = '<think>t</think><answer>[{"bbox_2d": [49, 35, 147, 105]}]</answer>'
    recording = Recording(segmenter)
    config = InferenceConfig(min_pixels=56 * 56, max_pixels=256 * 256, mode="stage1")
    reasoner = SocioReasoner(Scripted(base, [[stage1]]), recording, config)
    pred = reasoner.segment(noise_image(200, 150, 1), noise_image(200, 150, 2), "Zoo")
    assert pred.vlm_size == (196, 140)
    assert recording.prompted[0][0].box.as_list() == [49, 35, 147, 105]
    assert pred.stage1.targets_image[0].box.as_list() == pytest.approx([50, 37.5, 150, 112.5])


def test_stage1_reward_scores_relative_boxes_in_vlm_pixels():
    frames = Frames((200, 150), (192, 160))
    gt_vlm = [[48, 80, 144, 160]]
    relative = '<think>t</think><answer>[{"bbox_2d": [250, 500, 750, 1000]}]</answer>'

    def to_vlm(xy):
        return frames.points_array(xy, "relative", "vlm")

    assert stage1_rewards(relative, gt_vlm, to_vlm=to_vlm).accuracy == 1.0
    # The same numbers read as VLM pixels miss the GT box (neither IoU nor L1 hits: -1).
    assert stage1_rewards(relative, gt_vlm).accuracy == -1.0


def _jobs(segmenter, factor):
    sizes = [((96, 64), "Zoo"), ((64, 96), "a longer query")]
    return [
        engine.prepare(
            segmenter,
            noise_image(*size, 2 * i),
            noise_image(*size, 2 * i + 1),
            query,
            MIN_PIXELS,
            64 * 96,
            factor,
        )
        for i, (size, query) in enumerate(sizes)
    ]


@pytest.mark.parametrize(
    ("vlm_family", "sam_family"),
    [("qwen3_vl", "sam3_tracker"), ("qwen3_5", "sam2"), ("qwen3_vl", "sam2")],
)
def test_shared_greedy_tokens_equal_the_reference_path(family_models, vlm_family, sam_family):
    vlm, segmenter = family_models(vlm_family, sam_family)
    runs = {}
    for share in (True, False):
        settings = engine.EngineSettings(
            group_size=2, stage1=GREEDY, stage2=GREEDY, share_prefix=share
        )
        jobs = _jobs(segmenter, vlm.family.factor)
        runs[share] = engine.run(vlm, segmenter, jobs, settings)
    for stage in ("stage1", "stage2"):
        shared = [r.generation.token_ids for r in getattr(runs[True], stage)]
        alone = [r.generation.token_ids for r in getattr(runs[False], stage)]
        assert len(shared) == 4 and shared == alone and all(shared)
    assert runs[True].jobs[0].frames.vlm_size[0] % vlm.family.factor == 0


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_shared_work_runs_once_per_distinct_prompt(family_models, family):
    """Vision tower and prefill once per distinct prompt (2 jobs, G = 2, released strategy:
    stage 2 has one rendered prompt per stage-1 row), Qwen3.5's hybrid cache included."""
    vlm, segmenter = family_models(family)
    batch = _jobs(segmenter, vlm.family.factor)
    settings = engine.EngineSettings(group_size=2, stage1=GREEDY, stage2=GREEDY)
    counter = Counter(vlm.model)
    try:
        engine.run(vlm, segmenter, batch, settings)
    finally:
        counter.close()
    assert counter.images == [2 * 2, 2 * 2 * 2] and counter.prefills == [2, 2 * 2]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_5"])
def test_grouped_logprobs_equal_one_forward_per_row(family_models, family):
    """Every path of the update (shared prefix, vision tower once, no sharing) against a
    full forward per row."""
    vlm, _ = family_models(family)
    images = [[noise_image(64, 48, 5), noise_image(64, 48, 6)], [noise_image(48, 48, 7)] * 2]
    prompts = vlm.encode_prompts(["short", "a much longer prompt"], images)
    rows = [0, 0, 1, 1]
    ids = torch.randint(10, 400, (4, 3), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    reference = []
    for r, row in zip(rows, ids, strict=True):
        inputs = vlm.collate([prompts[r]])
        n = inputs["input_ids"].shape[1]
        logits = vlm.model(
            input_ids=torch.cat([inputs["input_ids"], row[None]], dim=1),
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros((1, 3), dtype=torch.int32)], dim=1
            ),
        ).logits[0, n - 1 : n + 2]
        reference.append(torch.log_softmax(logits.float(), -1).gather(-1, row[:, None])[:, 0])
    reference = torch.stack(reference)
    paths = [(False, False), (True, False), (True, True)]
    with torch.no_grad():
        for share, prefix in paths:
            logp = vlm.grouped_logprobs(prompts, rows, ids, mask, share=share, prefix=prefix)
            torch.testing.assert_close(logp, reference.detach(), rtol=1e-4, atol=1e-5)


def test_qwen3_5_hybrid_cache_rows_are_gathered_not_repeated(family_models):
    """transformers' linear-attention cache layer has no row repeat; reorder_cache moves its
    conv and recurrent states, and a static cache cannot hold them."""
    from transformers import DynamicCache

    vlm, _ = family_models("qwen3_5")
    assert not vlm.family.static_cache and POLICIES["qwen3_vl"].static_cache
    prompt = vlm.encode_prompts(["x"], [[noise_image(48, 48, 1)] * 2])
    inputs = vlm.collate(prompt)
    with torch.no_grad():
        out = vlm.model(**inputs, cache=DynamicCache(config=vlm.model.config), use_cache=True)
    with pytest.raises(AttributeError, match="batch_repeat_interleave"):
        out.cache.batch_repeat_interleave(2)
    linear = next(layer for layer in out.cache.layers if hasattr(layer, "recurrent_states"))
    state = linear.recurrent_states[0].clone()
    out.cache.reorder_cache(torch.tensor([0, 0, 0]))
    assert torch.equal(linear.recurrent_states[0], state.expand(3, *state.shape[1:]))
    with pytest.raises(ValueError, match="decoding 'eager'"):
        vlm.generate(inputs, replace(GREEDY, decoding="static"), group_size=2)
    # The update cannot backpropagate through shared states that the next forward overwrites
    # in place: its default is the vision tower once per prompt, rows on their own.
    ids, mask = torch.tensor([[5, 6]]), torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="updated in place"):
        vlm.grouped_logprobs(prompt, [0], ids, mask, prefix=True)
    vlm.grouped_logprobs(prompt, [0], ids, mask).sum().backward()
    vlm.model.zero_grad()


def test_wrong_patch_size_for_the_family_is_one_clear_error(tmp_path):
    folder = build_tiny_policy(tmp_path / "vlm", "qwen3_vl")
    config = folder / "preprocessor_config.json"
    config.write_text(config.read_text().replace('"patch_size": 16', '"patch_size": 14'))
    with pytest.raises(ValueError, match="needs 16 and 2"):
        VLMProcessor.from_pretrained(str(folder), family=QWEN3_VL)


@pytest.mark.parametrize(
    ("vlm_family", "sam_family"), [("qwen3_vl", "sam3_tracker"), ("qwen3_5", "sam2")]
)
def test_one_grpo_step_trains_each_family(
    family_folders, synth_dir, tmp_path, vlm_family, sam_family
):
    cfg = trainer_config(family_folders(vlm_family, sam_family), synth_dir, "steps=1")
    t = trainer(cfg, tmp_path)
    assert t.policy.family is POLICIES[vlm_family]
    assert t.segmenter.family is SEGMENTERS[sam_family]
    before = {k: v.detach().clone() for k, v in t.policy.model.named_parameters()}
    metrics = t.train()
    assert metrics["train/grad_norm"] > 0 and metrics["stage1/reward_format"] > 0
    assert any(not torch.equal(before[k], v) for k, v in t.policy.model.named_parameters())
    again = VisionLanguageModel.from_pretrained(str(tmp_path / "checkpoint-1"), device="cpu")
    assert again.family is POLICIES[vlm_family]


def test_tiny_models_then_segment_from_the_command_line(tmp_path, capsys):
    """The issue's done-check: Qwen3-VL + SAM 3 tracker tiny folders, then ``segment``."""
    from socioseg.cli import main

    assert (
        main(
            [
                "tiny-models",
                str(tmp_path / "m"),
                "--vlm-family",
                "qwen3_vl",
                "--sam-family",
                "sam3_tracker",
            ]
        )
        == 0
    )
    assert "Qwen3-VL" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["sam", "tiny-models.json", "vlm"]
    # A rerun replaces its own output; a folder of the user's is refused and left alone.
    assert main(["tiny-models", str(tmp_path / "m"), "--vlm-family", "qwen3_vl"]) == 0
    mine = tmp_path / "mine"
    (mine / "vlm").mkdir(parents=True)
    (mine / "vlm" / "config.json").write_text("{}")
    capsys.readouterr()
    assert main(["tiny-models", str(mine)]) == 2
    assert "holds files tiny-models did not write (vlm)" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["vlm"]
    assert (mine / "vlm" / "config.json").read_text() == "{}"
    assert main(["tiny-models", str(tmp_path / "m"), "--vlm-family", "qwen3_vl",
                 "--sam-family", "sam3_tracker"]) == 0  # fmt: skip
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            "--example",
            "0",
            "--vlm",
            str(tmp_path / "m" / "vlm"),
            "--sam",
            str(tmp_path / "m" / "sam"),
            "--out",
            str(out),
            "--min-pixels",
            str(128 * 128),
            "--max-pixels",
            str(256 * 256),
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    width, height = result["vlm_size"]
    assert width % 32 == 0 and height % 32 == 0
    assert Image.open(out / "mask.png").size == tuple(result["image_size"])


@pytest.mark.parametrize(
    ("model_type", "kind", "ok"),
    [
        ("sam2_video", "sam", True),  # SAM 2.1's Hub folders (loaded by Sam2Model)
        ("sam3_tracker", "sam", True),
        ("qwen3_vl", "vlm", True),
        ("qwen3_5", "vlm", True),
        ("qwen3_vl", "sam", False),
        ("llava", "vlm", False),
    ],
)
def test_sources_accept_every_family_and_name_them_when_not(tmp_path, model_type, kind, ok):
    from socioseg.models.sources import (
        QWEN_VL_TYPES,
        SAM_TYPES,
        SAM_WHAT,
        VLM_WHAT,
        WrongSourceError,
        model_source,
    )

    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    types, what = (SAM_TYPES, SAM_WHAT) if kind == "sam" else (QWEN_VL_TYPES, VLM_WHAT)
    if ok:
        assert model_source(tmp_path, types, what) == str(tmp_path)
    else:
        with pytest.raises(WrongSourceError, match=r"qwen3_vl|sam3_tracker") as error:
            model_source(tmp_path, types, what)
        assert f"holds a '{model_type}' model" in str(error.value)


def test_sam3_tracker_preprocessing_and_masks_by_hand(family_folders):
    """SAM 3 tracker: mean/std 0.5 at its own square side, prompts scaled to that side, its
    32 px (tiny; 288 real) logits upsampled to the embedded image; computed here by hand."""
    import torch.nn.functional as F

    from socioseg.types import Box, Point, Target

    segmenter = Segmenter.from_pretrained(str(family_folders("qwen2_5_vl", "sam3_tracker")[1]))
    prep = segmenter.preprocessing
    assert (prep.size, prep.image_mean, prep.image_std) == (112, (0.5,) * 3, (0.5,) * 3)
    saved = json.loads(
        (family_folders("qwen2_5_vl", "sam3_tracker")[1] / "preprocessor_config.json").read_text()
    )
    assert saved["mask_size"] == {"height": 32, "width": 32}
    image = noise_image(160, 96, 9)
    values = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy()).float() / 255
    resized = F.interpolate(values[None], (112, 112), mode="bilinear", antialias=True)
    pixels = (resized - 0.5) / 0.5
    target = Target(Box(20, 10, 120, 80), (Point(60, 40),))
    xy = torch.tensor(
        [
            [20 * 112 / 160, 10 * 112 / 96],
            [120 * 112 / 160, 80 * 112 / 96],
            [60 * 112 / 160, 40 * 112 / 96],
        ]
    )
    with torch.inference_mode():
        out = segmenter.model(
            pixel_values=pixels,
            input_points=xy[None, None],
            input_labels=torch.tensor([[[2, 3, 1]]], dtype=torch.int32),
        )
    best = int(out.iou_scores[0, 0].argmax())
    assert out.pred_masks.shape[-2:] == (32, 32)
    logits = out.pred_masks[0, 0, best]
    up = F.interpolate(logits[None, None], (96, 160), mode="bilinear", align_corners=False)
    ours = segmenter.segment(segmenter.embed(image), [target])
    agree = float(((up[0, 0] > 0).numpy() == ours).mean())
    assert agree > 0.999 and 0 < ours.sum() < ours.size  # float rounding may flip an edge pixel
