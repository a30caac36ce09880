"""Per-step scalars of a training run, written twice: TensorBoard events and a CSV.

``<folder>/tensorboard`` holds the events (``tensorboard --logdir <folder>``) and
``<folder>/<name>.csv`` one row per logged step (``step`` first, then the first row's keys in
order), flushed at every row, so a running job can be plotted. A resumed run opens the same
files; CSV rows past the step it resumes from (logged after its last checkpoint) are dropped,
so each step appears once.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path


class RunLog:
    def __init__(self, folder: str | Path, start_step: int = 0, name: str = "metrics") -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{name}.csv"
        self.fields: list[str] | None = None
        kept = ""
        if self.path.is_file():
            rows = list(csv.DictReader(io.StringIO(self.path.read_text())))
            if rows:
                self.fields = list(rows[0])
                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, self.fields, lineterminator="\n")
                writer.writeheader()
                writer.writerows(r for r in rows if int(r["step"]) <= start_step)
                kept = buffer.getvalue()
        self.path.write_text(kept)
        self._file = self.path.open("a", newline="")
        self._csv = None if self.fields is None else self._writer()
        self.writer = SummaryWriter(str(self.folder / "tensorboard"))

    def _writer(self) -> csv.DictWriter:
        return csv.DictWriter(self._file, self.fields, lineterminator="\n")

    def log(self, step: int, metrics: dict[str, float], csv_only: tuple[str, ...] = ()) -> None:
        """One row; keys in ``csv_only`` (e.g. wall time) are not sent to TensorBoard."""
        if self._csv is None:
            self.fields = ["step", *metrics]
            self._csv = self._writer()
            self._csv.writeheader()
        # A key the first row did not have is an error (DictWriter raises): never dropped.
        self._csv.writerow({"step": step, **{k: f"{v:.6g}" for k, v in metrics.items()}})
        self._file.flush()
        for key, value in metrics.items():
            if key not in csv_only:
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        self._file.close()
