"""The image-only processor, vision-token suppression, save/load and per-token log-probs."""

import pytest
import torch

from socioseg import prompts
from socioseg.models.processor import VISION_TOKENS
from socioseg.models.vlm import SamplingSettings, VisionLanguageModel
from tests.conftest import noise_image

SPEC_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>"
    "{TEXT}<|im_end|>\n<|im_start|>assistant\n"
)


def test_chat_template_matches_spec(tiny_vlm):
    text = prompts.stage1_text("Jinan Zoo")
    assert tiny_vlm.processor.chat_text(text) == SPEC_PROMPT.replace("{TEXT}", text)


def test_processor_expands_one_token_per_merged_patch(tiny_vlm):
    images = [[noise_image(756, 756), noise_image(756, 756)], [noise_image(112, 56)] * 2]
    inputs = tiny_vlm.encode(["a", "a longer prompt text"], images)
    assert inputs["image_grid_thw"].tolist() == [[1, 54, 54]] * 2 + [[1, 4, 8]] * 2
    image_id = tiny_vlm.processor.image_token_id
    counts = (inputs["input_ids"] == image_id).sum(dim=1).tolist()
    assert counts == [2 * 729, 2 * 8]  # 756x756 -> 27 x 27 tokens per image
    assert torch.equal(inputs["mm_token_type_ids"].bool(), inputs["input_ids"] == image_id)
    # left padding: the shorter row starts with padding, both end with the assistant header
    assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][:, -1].all()
    assert inputs["pixel_values"].shape == (2 * 54 * 54 + 2 * 32, 3 * 2 * 14 * 14)


def test_processor_rejects_image_count_mismatch(tiny_vlm):
    with pytest.raises(ValueError, match="2 image placeholders but 1 images"):
        tiny_vlm.encode(["a"], [[noise_image(56, 56)]])


def test_vision_tokens_are_never_generated(tiny_models):
    vlm = VisionLanguageModel.from_pretrained(str(tiny_models[0]), device="cpu")
    pad_id = vlm.processor.image_token_id
    with torch.no_grad():  # make <|image_pad|> by far the most likely next token
        vlm.model.lm_head.weight[pad_id] = vlm.model.lm_head.weight.abs().max() * 50
        vlm.model.lm_head.weight[pad_id] *= torch.sign(vlm.model.lm_head.weight[pad_id])
    inputs = vlm.encode(["x"], [[noise_image(56, 56)] * 2])
    logits = vlm.model(**inputs).logits[0, -1]
    assert logits.argmax().item() == pad_id  # unsuppressed, the model would emit it
    vision_ids = set(vlm.processor.vision_token_ids)
    assert len(vision_ids) == len(VISION_TOKENS)
    for greedy in (True, False):
        for group_size in (1, 3):  # one prefill shared by 3 continuations suppresses them too
            sampling = SamplingSettings(greedy=greedy, max_new_tokens=12)
            for out in vlm.generate(inputs, sampling, group_size=group_size):
                assert out.token_ids and not vision_ids & set(out.token_ids)


def test_save_load_round_trip_gives_identical_greedy_output(tiny_vlm, tmp_path):
    tiny_vlm.model.save_pretrained(tmp_path)
    tiny_vlm.processor.save_pretrained(tmp_path)
    again = VisionLanguageModel.from_pretrained(str(tmp_path), device="cpu")
    images = [[noise_image(84, 56, 3), noise_image(84, 56, 4)]]
    settings = SamplingSettings(greedy=True, max_new_tokens=16)
    first = tiny_vlm.generate(tiny_vlm.encode(["q"], images), settings)
    second = again.generate(again.encode(["q"], images), settings)
    assert first == second and len(first[0].token_ids) > 0


def test_seeded_sampling_is_reproducible(tiny_vlm):
    inputs = tiny_vlm.encode(["q", "q"], [[noise_image(56, 56)] * 2] * 2)
    a = tiny_vlm.generate(inputs, SamplingSettings(seed=7, max_new_tokens=10))
    b = tiny_vlm.generate(inputs, SamplingSettings(seed=7, max_new_tokens=10))
    assert a == b


def test_response_logprobs_match_generation_scores(tiny_vlm):
    inputs = tiny_vlm.encode(["short", "a much longer prompt"], [[noise_image(56, 84)] * 2] * 2)
    config = tiny_vlm._generation_config(SamplingSettings(greedy=True, max_new_tokens=6))
    config.output_logits, config.return_dict_in_generate = True, True
    with torch.no_grad():
        out = tiny_vlm.model.generate(**inputs, generation_config=config)
    response = out.sequences[:, inputs["input_ids"].shape[1] :]
    expected = torch.stack(
        [
            torch.log_softmax(s.float(), -1).gather(-1, response[:, i : i + 1]).squeeze(-1)
            for i, s in enumerate(out.logits)
        ],
        dim=1,
    )
    with torch.no_grad():
        ours = tiny_vlm.response_logprobs(inputs, response, torch.ones_like(response))
    assert torch.allclose(ours, expected, atol=1e-4)


def test_sampling_settings_validate():
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingSettings(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0)


def test_matches_transformers_processor_when_torchvision_works(tiny_vlm):
    pytest.importorskip("torchvision")
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    reference = Qwen2_5_VLProcessor(
        image_processor=tiny_vlm.processor.image_processor,
        tokenizer=tiny_vlm.processor.tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=tiny_vlm.processor.tokenizer.chat_template,
    )
    images = [noise_image(756, 756, 1), noise_image(756, 756, 2)]
    text = tiny_vlm.processor.chat_text(prompts.stage1_text("Jinan Zoo"))
    ours = tiny_vlm.processor([text], [images])
    theirs = reference(text=[text], images=images, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "image_grid_thw", "mm_token_type_ids"):
        assert torch.equal(ours[key], theirs[key].to(ours[key].dtype)), key
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"], atol=1e-5)


def test_loads_processor_files_in_the_released_checkpoint_format(tiny_models, tmp_path):
    """Qwen2.5-VL-3B-Instruct ships min/max_pixels keys and a chat_template.json."""
    import json
    import shutil

    from socioseg.models.processor import VLMProcessor

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_models[0], folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "min_pixels": 3136,
                "max_pixels": 12845056,
                "patch_size": 14,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor",
            }
        )
    )
    processor = VLMProcessor.from_pretrained(str(folder))
    assert processor.tokenizer.chat_template == template
    assert processor.image_processor.size.shortest_edge == 3136
    assert processor.image_processor.size.longest_edge == 12845056
    grid = processor(["<|image_pad|>"], [[noise_image(756, 756)]])["image_grid_thw"]
    assert grid.tolist() == [[1, 54, 54]]


def test_checkpoint_without_chat_template_is_a_clear_error(tiny_models, tmp_path):
    import shutil

    from socioseg.models.processor import VLMProcessor

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_models[0], folder)
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="has no chat template"):
        VLMProcessor.from_pretrained(str(folder))
