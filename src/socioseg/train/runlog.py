"""Per-step scalars of a training run, written twice: TensorBoard events and CSV tables.

``<folder>/tensorboard`` holds the events (``tensorboard --logdir <folder>``) and
``<folder>/<table>.csv`` one row per logged step of each table (``metrics`` by default, e.g.
``validation`` too): ``step`` first, then the table's first row's keys in order, flushed at
every row, so a running job can be plotted. A resumed run opens the same files; CSV rows past
the step it resumes from (logged after its last checkpoint) are dropped, so each step appears
once.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path


class _Table:
    """One CSV file: its columns come from the first row written (or found on resume)."""

    def __init__(self, path: Path, start_step: int) -> None:
        self.fields: list[str] | None = None
        kept = ""
        if path.is_file():
            rows = list(csv.DictReader(io.StringIO(path.read_text())))
            if rows:
                self.fields = list(rows[0])
                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, self.fields, lineterminator="\n")
                writer.writeheader()
                writer.writerows(r for r in rows if int(r["step"]) <= start_step)
                kept = buffer.getvalue()
        path.write_text(kept)
        self.file = path.open("a", newline="")
        self.writer = None if self.fields is None else self._writer()

    def _writer(self) -> csv.DictWriter:
        return csv.DictWriter(self.file, self.fields, lineterminator="\n")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is None:
            self.fields = ["step", *metrics]
            self.writer = self._writer()
            self.writer.writeheader()
        # A key the first row did not have is an error (DictWriter raises): never dropped.
        self.writer.writerow({"step": step, **{k: f"{v:.6g}" for k, v in metrics.items()}})
        self.file.flush()


class RunLog:
    def __init__(self, folder: str | Path, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.start_step = start_step
        self.tables: dict[str, _Table] = {}
        self.writer = SummaryWriter(str(self.folder / "tensorboard"))

    def log(
        self,
        step: int,
        metrics: dict[str, float],
        csv_only: tuple[str, ...] = (),
        table: str = "metrics",
    ) -> None:
        """One row of ``table``; keys in ``csv_only`` (e.g. wall time) skip TensorBoard."""
        if table not in self.tables:
            self.tables[table] = _Table(self.folder / f"{table}.csv", self.start_step)
        self.tables[table].write(step, metrics)
        for key, value in metrics.items():
            if key not in csv_only:
                self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        for table in self.tables.values():
            table.file.close()
