"""The two-stage pipeline with a scripted policy (real processor and tiny SAM2)."""

import numpy as np
import pytest
from PIL import Image

from socioseg import prompts
from socioseg.models.vlm import Generation, SamplingSettings, VisionLanguageModel
from socioseg.render import render_feedback
from socioseg.socioreasoner import InferenceConfig, InputError, SocioReasoner
from tests.conftest import noise_image

# 200x150 satellite with min_pixels 56*56 -> VLM frame 196 x 140.
STAGE1 = (
    '<think>t</think><answer>[{"bbox_2d": [0, 0, 98, 70]}, {"bbox_2d": [98, 70, 196, 140]}]'
    "</answer>"
)
STAGE2 = (
    '<think>t</think><answer>[{"bbox_2d": [0, 0, 98, 70], "points": [[49, 35]]}, '
    '{"bbox_2d": [98, 70, 196, 140], "points": [[150, 100], [120, 90]]}]</answer>'
)


class ScriptedVLM(VisionLanguageModel):
    """A real tiny VLM whose responses are scripted per call; it records its prompts."""

    def __init__(self, base: VisionLanguageModel, responses: list[list[str]]):
        super().__init__(base.model, base.processor, name="scripted")
        self.responses = list(responses)
        self.calls = []

    def encode_prompts(self, user_texts, images):
        self.calls.append((list(user_texts), [list(group) for group in images]))
        return super().encode_prompts(user_texts, images)

    def generate(self, inputs, sampling, group_size=1):
        texts = self.responses.pop(0)
        assert len(texts) == inputs["input_ids"].shape[0] * group_size
        return [Generation(text, ()) for text in texts]


def reasoner(tiny_vlm, tiny_segmenter, responses, **config):
    config = InferenceConfig(min_pixels=56 * 56, **config)
    return SocioReasoner(ScriptedVLM(tiny_vlm, responses), tiny_segmenter, config)


def test_two_stage_maps_frames_and_embeds_once(tiny_vlm, tiny_segmenter):
    sat, map_ = noise_image(200, 150, 1), noise_image(400, 300, 2)
    model = reasoner(tiny_vlm, tiny_segmenter, [[STAGE1], [STAGE2]])
    before = tiny_segmenter.encoder_calls
    pred = model.segment(sat, map_, " Jinan Zoo ")
    assert tiny_segmenter.encoder_calls - before == 1
    assert pred.vlm_size == (196, 140) and pred.image_size == (200, 150)
    assert pred.mask.shape == (150, 200) and pred.mask.dtype == bool
    assert pred.stage1.mask.shape == (150, 200)
    assert pred.final_source == "stage2"
    # VLM frame (196 x 140) -> satellite frame (200 x 150), per axis.
    box = pred.stage1.targets_image[1].box.as_list()
    assert box == pytest.approx([100, 75, 200, 150])
    point = pred.stage2.targets_image[1].points[0].as_list()
    assert point == pytest.approx([150 * 200 / 196, 100 * 150 / 140])

    (text1, images1), (text2, images2) = model.vlm.calls
    assert text1 == [prompts.stage1_text("Jinan Zoo")]
    answer1 = STAGE1.split("<answer>")[1].split("</answer>")[0]
    assert text2 == [prompts.stage2_text("Jinan Zoo", answer1)]
    assert [im.size for im in images1[0]] == [(196, 140), (196, 140)]
    # stage 2 sees the stage-1 boxes and coarse mask drawn on both resized images
    expected = render_feedback(
        images1[0][1], [[0, 0, 98, 70], [98, 70, 196, 140]], pred.stage1.mask
    )
    assert np.array_equal(np.asarray(images2[0][1]), np.asarray(expected))
    assert np.array_equal(np.asarray(pred.feedback_sat), np.asarray(expected))
    assert set(pred.timings) >= {"sam_embed", "stage1_generate", "stage2_generate", "render"}


def test_unusable_stage2_gives_empty_mask_or_the_fallback(tiny_vlm, tiny_segmenter):
    sat, map_ = noise_image(200, 150), noise_image(200, 150)
    model = reasoner(tiny_vlm, tiny_segmenter, [[STAGE1], ["<think>lost</think>"]])
    pred = model.segment(sat, map_, "School")
    assert pred.final_source == "empty" and not pred.mask.any()
    assert "no <answer>" in pred.stage2.parsed.problems[0]
    model = reasoner(tiny_vlm, tiny_segmenter, [[STAGE1], ["nothing"]], stage2_fallback=True)
    pred = model.segment(sat, map_, "School")
    assert pred.final_source == "stage1-fallback"
    assert np.array_equal(pred.mask, pred.stage1.mask)


def test_stage1_mode_stops_after_the_coarse_mask(tiny_vlm, tiny_segmenter):
    model = reasoner(tiny_vlm, tiny_segmenter, [[STAGE1]])
    pred = model.segment(noise_image(200, 150), noise_image(200, 150), "Park", mode="stage1")
    assert pred.stage2 is None and pred.feedback_map is None
    assert pred.final_source == "stage1" and np.array_equal(pred.mask, pred.stage1.mask)
    assert len(model.vlm.calls) == 1


def test_single_stage_uses_its_prompt_and_points(tiny_vlm, tiny_segmenter):
    model = reasoner(tiny_vlm, tiny_segmenter, [[STAGE2]], mode="single-stage")
    pred = model.segment(noise_image(200, 150), noise_image(200, 150), "Park")
    assert model.vlm.calls[0][0] == [prompts.single_stage_text("Park")]
    assert [len(t.points) for t in pred.stage1.targets_image] == [1, 2]
    assert pred.final_source == "single-stage"


def test_batch_of_differently_sized_images(tiny_vlm, tiny_segmenter):
    model = reasoner(tiny_vlm, tiny_segmenter, [[STAGE1, "junk"], [STAGE2, STAGE2]])
    items = [
        (noise_image(200, 150), noise_image(200, 150), "A"),
        (noise_image(112, 112), noise_image(56, 56), "B"),
    ]
    before = tiny_segmenter.encoder_calls
    preds = model.segment_batch(items)
    assert tiny_segmenter.encoder_calls - before == 2
    assert [p.mask.shape for p in preds] == [(150, 200), (112, 112)]
    assert [p.query for p in preds] == ["A", "B"]
    assert preds[1].stage1.targets_image == ()
    assert not preds[1].stage1.mask.any()


def test_bad_inputs_name_the_problem(tiny_vlm, tiny_segmenter, tmp_path):
    model = reasoner(tiny_vlm, tiny_segmenter, [])
    with pytest.raises(InputError, match="file not found"):
        model.segment(tmp_path / "missing.png", noise_image(10, 10), "x")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match=r"bad\.png is not a readable image"):
        model.segment(bad, noise_image(10, 10), "x")
    with pytest.raises(InputError, match="same aspect ratio"):
        model.segment(noise_image(100, 100), noise_image(100, 50), "x")
    with pytest.raises(InputError, match="query is empty"):
        model.segment(noise_image(100, 100), noise_image(100, 100), "  ")


def test_real_generation_runs_end_to_end(tiny_models):
    model = SocioReasoner.from_pretrained(
        vlm=str(tiny_models[0]),
        sam=str(tiny_models[1]),
        device="cpu",
        config=InferenceConfig(min_pixels=56 * 56, sampling=SamplingSettings(max_new_tokens=8)),
    )
    pred = model.segment(noise_image(112, 84), noise_image(112, 84), "Hospital")
    assert pred.mask.shape == (84, 112)
    assert pred.stage2 is not None and isinstance(pred.stage2.response, str)


def test_config_validates_mode():
    with pytest.raises(ValueError, match="unknown mode 'three-stage'"):
        InferenceConfig(mode="three-stage")


def test_greyscale_and_rgba_inputs_are_converted(tiny_vlm, tiny_segmenter):
    model = reasoner(tiny_vlm, tiny_segmenter, [[STAGE1], [STAGE2]])
    sat = Image.new("L", (200, 150), 90)
    pred = model.segment(sat, Image.new("RGBA", (200, 150)), "A")
    assert pred.mask.shape == (150, 200)
