"""Write encoded samples in the folder layout or as Hugging Face-style parquet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from socioseg.data._sources import FOLDER_FILES, HF_COLUMNS, QUESTION_FILE

if TYPE_CHECKING:
    from socioseg.data.synth import Encoded


def write_folder_sample(item: Encoded, folder: Path) -> None:
    """``<folder>/{map.png, sat.png, mask.png, question.json}`` for one sample."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in FOLDER_FILES.items():
        (folder / name).write_bytes(item.png[key])
    (folder / QUESTION_FILE).write_text(json.dumps({"problem": item.query}, ensure_ascii=False))


class FolderWriter:
    """One split folder of the folder layout; an existing folder is replaced."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> FolderWriter:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        return self

    def add(self, item: Encoded) -> None:
        write_folder_sample(item, self.folder / item.id)

    def __exit__(self, *exc: object) -> None:
        return None


class ParquetWriter:
    """One parquet file with the SocioSeg columns as ``datasets`` features.

    Rows are streamed in row groups of :attr:`BATCH` samples, so memory stays flat and a
    reader can fetch one sample without reading the whole file.
    """

    BATCH = 16

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []
        self.writer = None

    def __enter__(self) -> ParquetWriter:
        import datasets
        import pyarrow.parquet as pq

        image = datasets.Image()
        features = datasets.Features(
            {
                HF_COLUMNS["id"]: datasets.Value("string"),
                HF_COLUMNS["query"]: datasets.Value("string"),
                HF_COLUMNS["map"]: image,
                HF_COLUMNS["sat"]: image,
                HF_COLUMNS["mask"]: image,
            }
        )
        self.schema = features.arrow_schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(str(self.path), self.schema)
        return self

    def add(self, item: Encoded) -> None:
        row = {HF_COLUMNS["id"]: item.id, HF_COLUMNS["query"]: item.query}
        for key in FOLDER_FILES:
            row[HF_COLUMNS[key]] = {"bytes": item.png[key], "path": None}
        self.rows.append(row)
        if len(self.rows) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def __exit__(self, *exc: object) -> None:
        self._flush()
        self.writer.close()
