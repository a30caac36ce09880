"""Evaluation: a SocioSeg split run through the method and scored, resumable and sharded.

- :mod:`~socioseg.eval.run`: :func:`~socioseg.eval.run.evaluate` (one split, resumable,
  sharded by ``--shard`` or torchrun) and :func:`~socioseg.eval.run.merge` (shards into one
  result);
- :mod:`~socioseg.eval.score`: :func:`~socioseg.eval.score.score_predictions`, the same
  metrics on masks made by any other method;
- :mod:`~socioseg.eval.files`: the folder's files (``run.json``, ``predictions.jsonl``),
  shard folders and the one function that turns a sample id into a file name;
- :mod:`~socioseg.eval.report`: metrics per level, ``report.md`` and the contact sheet, from
  the rows alone.

It may import the core (:mod:`socioseg.socioreasoner` and below), :mod:`socioseg.data` and
:mod:`socioseg.torchrun`; the CLI and training import it, never the other way round.
"""
