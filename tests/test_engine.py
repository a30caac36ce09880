"""The engine: shared prompts give the reference path's tokens, log-probs and gradients, and
the group's shared work (vision tower, prefill, SAM encoder) runs once per distinct input."""

from dataclasses import replace

import pytest
import torch

from socioseg import engine
from socioseg.models.vlm import SamplingSettings
from tests.conftest import noise_image

G = 3
GREEDY = SamplingSettings(greedy=True, max_new_tokens=10)


def jobs(segmenter):
    """Two samples of different VLM frames and query lengths (rows pad differently)."""
    return [
        engine.prepare(
            segmenter, noise_image(84, 56, 1), noise_image(84, 56, 2), "Zoo", 56**2, 56**2 * 4
        ),
        engine.prepare(
            segmenter,
            noise_image(56, 84, 3),
            noise_image(56, 84, 4),
            "a longer query",
            56**2,
            56**2 * 4,
        ),
    ]


def length_reward(stage, index, text, mask, stage1_text):
    """A deterministic stand-in reward: the paper strategy only needs an order."""

    class Reward:
        total = float(len(text) % 7 + index)

    return Reward()


def settings(**kw):
    return engine.EngineSettings(group_size=G, stage1=GREEDY, stage2=GREEDY, **kw)


@pytest.mark.parametrize("strategy", ["released", "paper"])
def test_shared_greedy_tokens_equal_the_reference_path(tiny_vlm, tiny_segmenter, strategy):
    runs = {
        share: engine.run(
            tiny_vlm,
            tiny_segmenter,
            jobs(tiny_segmenter),
            settings(strategy=strategy, share_prefix=share),
            length_reward,
        )
        for share in (True, False)
    }
    for stage in ("stage1", "stage2"):
        shared = [r.generation.token_ids for r in getattr(runs[True], stage)]
        alone = [r.generation.token_ids for r in getattr(runs[False], stage)]
        assert len(shared) == 2 * G and shared == alone
        assert all(len(ids) > 0 for ids in shared)
    sources = [r.source for r in runs[True].stage2]
    assert sources == [r.source for r in runs[False].stage2]
    if strategy == "paper":  # one rendered prompt per group, G responses from it
        assert len({r.prompt for r in runs[True].stage2}) == 2


def test_static_cache_decoding_gives_the_eager_tokens(tiny_vlm, tiny_segmenter):
    static = SamplingSettings(greedy=True, max_new_tokens=10, decoding="static")
    a = engine.run(tiny_vlm, tiny_segmenter, jobs(tiny_segmenter), settings(mode="stage1"))
    b = engine.run(
        tiny_vlm,
        tiny_segmenter,
        jobs(tiny_segmenter),
        engine.EngineSettings(mode="stage1", group_size=G, stage1=static),
    )
    assert [r.generation for r in a.stage1] == [r.generation for r in b.stage1]


def test_sampled_continuations_of_one_prompt_differ(tiny_vlm, tiny_segmenter):
    sampling = SamplingSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=8)
    out = engine.run(
        tiny_vlm,
        tiny_segmenter,
        jobs(tiny_segmenter)[:1],
        engine.EngineSettings(mode="stage1", group_size=4, stage1=sampling),
    )
    assert len({r.generation.token_ids for r in out.stage1}) > 1  # G draws, not one copied


class Counter:
    """Forward hooks: images through the vision tower, batch sizes of prefill calls."""

    def __init__(self, model):
        self.images, self.prefills = [], []
        self.handles = [
            model.model.visual.register_forward_hook(self._vision, with_kwargs=True),
            model.model.language_model.register_forward_hook(self._text, with_kwargs=True),
        ]

    def _vision(self, module, args, kwargs, output):
        self.images.append(len(kwargs["grid_thw"]))

    def _text(self, module, args, kwargs, output):
        embeds = kwargs["inputs_embeds"]
        if embeds.shape[1] > 1:  # decoding steps run one token per row
            self.prefills.append(embeds.shape[0])

    def close(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize(
    ("strategy", "share", "images", "prefills"),
    [
        ("released", True, [2 * 2, 2 * 2 * G], [2, 2 * G]),
        ("paper", True, [2 * 2, 2 * 2], [2, 2]),
        ("released", False, [2 * 2 * G, 2 * 2 * G], [2 * G, 2 * G]),
    ],
)
def test_shared_work_runs_once_per_distinct_input(
    tiny_vlm, tiny_segmenter, strategy, share, images, prefills
):
    before = tiny_segmenter.encoder_calls
    batch = jobs(tiny_segmenter)
    assert tiny_segmenter.encoder_calls - before == 2  # one SAM embedding per satellite
    counter = Counter(tiny_vlm.model)
    try:
        engine.run(
            tiny_vlm,
            tiny_segmenter,
            batch,
            settings(strategy=strategy, share_prefix=share),
            length_reward,
        )
    finally:
        counter.close()
    assert tiny_segmenter.encoder_calls - before == 2  # no SAM encoder call in 4G prompts
    assert counter.images == images  # one vision-tower call per stage, 2 images per prompt
    assert counter.prefills == prefills


def reference_logprobs(vlm, prompts, rows, ids, mask):
    """Independent: one full forward per row, log-softmax over every position."""
    out = []
    for r, row_ids, row_mask in zip(rows, ids, mask, strict=True):
        inputs = vlm.collate([prompts[r]])
        n = int(row_mask.sum())
        logits = vlm.model(
            input_ids=torch.cat([inputs["input_ids"], row_ids[None, :n]], dim=1),
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros((1, n), dtype=torch.int32)], dim=1
            ),
        ).logits[0]
        p = inputs["input_ids"].shape[1]
        logp = torch.log_softmax(logits[p - 1 : p - 1 + n].float(), dim=-1)
        picked = logp.gather(-1, row_ids[:n, None])[:, 0]
        out.append(torch.cat([picked, torch.zeros(ids.shape[1] - n)]))
    return torch.stack(out)


def test_grouped_logprobs_and_gradients_equal_the_unshared_computation(tiny_vlm):
    images = [[noise_image(84, 56, 5), noise_image(84, 56, 6)], [noise_image(56, 56, 7)] * 2]
    prompts = tiny_vlm.encode_prompts(["short", "a much longer prompt"], images)
    rows = [0, 0, 1, 0, 1]
    lengths = [5, 3, 4, 1, 5]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 400, (len(rows), 5), generator=generator)
    mask = (torch.arange(5)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask + tiny_vlm.processor.tokenizer.pad_token_id * (1 - mask)
    model = tiny_vlm.model
    results = {}
    paths = {"prefix": (True, True), "vision": (True, False), "unshared": (False, False)}
    for name in (*paths, "reference"):
        model.zero_grad()
        if name == "reference":
            logp = reference_logprobs(tiny_vlm, prompts, rows, ids, mask)
        else:
            share, prefix = paths[name]
            logp = tiny_vlm.grouped_logprobs(prompts, rows, ids, mask, share=share, prefix=prefix)
        (logp * mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[name] = (logp * mask, grads)
    model.zero_grad()
    ref_logp, ref_grads = results["reference"]
    assert any("visual" in n for n in ref_grads)
    for name in paths:
        logp, grads = results[name]
        torch.testing.assert_close(logp, ref_logp, rtol=1e-5, atol=1e-5)
        assert grads.keys() == ref_grads.keys()
        for key, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[key], rtol=1e-5, atol=1e-6)


def test_a_batch_stops_when_every_row_has_ended(tiny_models):
    from socioseg.models.vlm import VisionLanguageModel

    vlm = VisionLanguageModel.from_pretrained(str(tiny_models[0]), device="cpu")
    eos = vlm.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # every row ends at once: EOS is by far the most likely token
        vlm.model.lm_head.bias = torch.nn.Parameter(torch.zeros(vlm.model.lm_head.out_features))
        vlm.model.lm_head.bias[eos] = 1e4
    inputs = vlm.encode(["a", "b c"], [[noise_image(56, 56)] * 2] * 2)
    counter = Counter(vlm.model)
    steps = []
    hook = vlm.model.model.language_model.register_forward_hook(lambda *a: steps.append(1))
    try:
        out = vlm.generate(inputs, SamplingSettings(greedy=True, max_new_tokens=50), group_size=G)
    finally:
        hook.remove()
        counter.close()
    assert [g.token_ids for g in out] == [(eos,)] * 2 * G
    assert len(steps) == 2  # the shared prefill, then the rows' last prompt token: no more


@pytest.mark.parametrize("decoding", ["eager", "static"])
def test_shared_decoding_logits_equal_the_copies(tiny_vlm, decoding):
    """Scores, not just argmaxes: a wrong 3D-position offset after the repeat moves them."""
    images = [[noise_image(56, 84, 1), noise_image(56, 84, 2)], [noise_image(84, 56, 3)] * 2]
    texts = ["short", "a much longer prompt here"]
    sampling = SamplingSettings(greedy=True, max_new_tokens=8, decoding=decoding)
    config = tiny_vlm._generation_config(sampling)
    config.output_logits, config.return_dict_in_generate = True, True
    with torch.inference_mode():
        shared = tiny_vlm._generate_shared(tiny_vlm.encode(texts, images), config, G, decoding)
        copies = tiny_vlm.encode(
            [t for t in texts for _ in range(G)], [i for i in images for _ in range(G)]
        )
        alone = tiny_vlm.model.generate(**copies, generation_config=config)
    torch.testing.assert_close(torch.stack(shared.logits), torch.stack(alone.logits))


def test_each_stage_keeps_its_token_limit(tiny_vlm, tiny_segmenter):
    limits = engine.EngineSettings(
        stage1=replace(GREEDY, max_new_tokens=6), stage2=replace(GREEDY, max_new_tokens=3)
    )
    out = engine.run(tiny_vlm, tiny_segmenter, jobs(tiny_segmenter), limits)
    assert max(len(r.generation.token_ids) for r in out.stage1) == 6
    assert max(len(r.generation.token_ids) for r in out.stage2) == 3


@pytest.mark.parametrize(
    ("share", "prefix", "images", "batches"),
    [(True, True, [4], [2, 5]), (True, False, [4], [5]), (False, False, [10], [5])],
)
def test_update_runs_each_distinct_prompt_once(tiny_vlm, share, prefix, images, batches):
    """5 response rows to 2 distinct prompts (2 images each)."""
    prompts = tiny_vlm.encode_prompts(["a", "b c"], [[noise_image(56, 56, 8)] * 2] * 2)
    ids = torch.full((5, 3), 40)
    counter = Counter(tiny_vlm.model)
    try:
        with torch.no_grad():
            tiny_vlm.grouped_logprobs(
                prompts, [0, 0, 1, 1, 0], ids, torch.ones_like(ids), share=share, prefix=prefix
            )
    finally:
        counter.close()
    assert counter.images == images
    assert counter.prefills == batches  # with prefix: the prompts once, then the responses
