"""The models: everything that touches a VLM or SAM checkpoint, and nothing of the method.

- :mod:`~socioseg.models.families`: what differs between model families (Qwen2.5-VL,
  Qwen3-VL, Qwen3.5; SAM2 / SAM 2.1, SAM 3 tracker), chosen by ``config.json``'s
  ``model_type``: frame rule, normalisation, answer coordinates, vision tokens, cache sharing;

- :mod:`~socioseg.models.vlm`: the only module that runs the VLM (load, generate with a shared
  prefix, per-token log-probs); :mod:`~socioseg.models.processor` its torchvision-free
  processor (chat template, image resize and patches, image-token expansion);
- :mod:`~socioseg.models.segmenter`: the only module that runs SAM2 (embed an image once,
  prompt it many times), with its pre- and post-processing;
- :mod:`~socioseg.models.concept`: SAM 3's concept segmenter given the query text alone (the
  ``--mode sam3-concept`` baseline), with its pre- and post-processing;
- :mod:`~socioseg.models.sources`: which names and folders hold which model (Hub ids, local
  folders, the shipped ``mini``); :mod:`~socioseg.models.defaults`: a checkpoint's own frame and
  answer-length defaults (``socioseg_inference.json``);
- :mod:`~socioseg.models.device`: device and dtype choice;
- :mod:`~socioseg.models.builders`: every model the project builds itself, by what it builds
  (tiny random-weight policies and segmenters of every family, socioseg-mini's untrained start,
  random SAM2 of any size).

It may import :mod:`socioseg.types`, :mod:`socioseg.prompts` and :mod:`socioseg.geometry`
(the core's leaves) and, for the mini vocabulary only, :mod:`socioseg.data`; never the engine,
the pipeline or any other wing.
"""
