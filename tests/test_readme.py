"""The README's training smoke run: what CI runs, what `make smoke` runs, what the config reads.

CI (.ci/run) runs the README's block verbatim; these checks keep the Makefile and the config
in step with it without spending the run's minute in the test suite.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from socioseg.cli import build_parser
from socioseg.train.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def smoke_commands() -> list[str]:
    """The lines of the README block after ``<!-- smoke-run -->``, as .ci/run extracts them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^<!-- smoke-run -->\n```bash\n(.*?)^```$", text, re.S | re.M)
    assert match, "README.md has no <!-- smoke-run --> block"
    return [line for line in match.group(1).splitlines() if line.strip()]


def _without_comment(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def make_smoke_commands() -> list[list[str]]:
    """The socioseg commands ``make smoke`` runs, with the Makefile's variables filled in."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    variables = dict(re.findall(r"^(\w+) :?= (.+)$", text, re.M))
    commands = []
    for line in re.findall(r"^\t\$\(BIN\)/(socioseg .+)$", text, re.M):
        for name, value in variables.items():
            line = line.replace(f"$({name})", value)
        commands.append(shlex.split(line))
    wanted = ("tiny-models", "synth", "train")
    return [c for c in commands if c[1] in wanted and "--example" not in c]


def test_make_smoke_runs_the_readme_commands():
    assert [_without_comment(line) for line in smoke_commands()] == make_smoke_commands()


def test_the_smoke_commands_make_what_the_config_reads():
    tiny, synth, train = (
        build_parser().parse_args(_without_comment(line)[1:]) for line in smoke_commands()
    )
    assert (tiny.command, synth.command, train.command) == ("tiny-models", "synth", "train")
    config = load_config(ROOT / train.config)
    assert Path(config.model.vlm) == tiny.out / "vlm" and Path(config.model.sam) == tiny.out / "sam"
    assert Path(config.data.train) == synth.out and Path(config.data.val) == synth.out
    assert synth.size == 256 and synth.n >= config.batch_size
