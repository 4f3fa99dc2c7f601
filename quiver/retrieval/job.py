"""RetrievalJob: a training set that is computed only when asked for.

``get_historical_features`` returns at once; the engine runs when one of
``to_arrow``/``to_pandas``/``to_polars``/``to_parquet``/``to_reader``/``persist``
is called (each call runs it again: the source may have changed since).
Results stream from the engine in Arrow batches; on-demand views run on each
batch, and the engine's internal column names become the output names here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from quiver.plan.retrieval import RetrievalPlan

if TYPE_CHECKING:
    import pandas as pd

    from quiver.retrieval.datasets import SavedDataset

__all__ = ["RetrievalJob"]


class RetrievalJob:
    """The lazy result of ``get_historical_features``."""

    def __init__(
        self,
        plan: RetrievalPlan,
        run: Callable[[], pa.RecordBatchReader],
        persist: Callable[[RetrievalJob, str, bool], SavedDataset] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        self._run = run
        self._persist = persist
        self.metadata = dict(metadata or {})
        self._progress: Callable[[int, int], None] | None = None

    @property
    def features(self) -> list[str]:
        return list(self.plan.refs)

    @property
    def columns(self) -> list[str]:
        return self.plan.entity_columns + list(self.plan.output.values())

    def _finish(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        table = pa.Table.from_batches([batch])
        for step in self.plan.on_demand:
            inputs = pa.table({name: table[col] for name, col in step.inputs.items()})
            out = step.view.transform_arrow(inputs)
            for feat, col in step.outputs.items():
                table = table.append_column(col, out[feat])
        cols = [table[c] for c in self.plan.entity_columns] + [table[c] for c in self.plan.output]
        result = pa.table(cols, names=self.columns)
        return result.to_batches()[0] if result.num_rows else pa.RecordBatch.from_pylist([], schema=result.schema)

    def to_reader(self, progress: Callable[[int, int], None] | None = None) -> pa.RecordBatchReader:
        """The rows as a stream of Arrow batches, in entity-row order (bounded memory)."""
        progress = progress or self._progress
        total = int(self.metadata.get("entity_rows", 0))
        reader = self._run()
        first: list[pa.RecordBatch] = []
        it = iter(reader)
        for b in it:
            first.append(self._finish(b))
            break
        if not first:  # no rows: derive the schema from an empty batch
            empty = pa.RecordBatch.from_pylist([], schema=reader.schema)
            first.append(self._finish(empty))
        schema = first[0].schema

        def rest() -> Iterator[pa.RecordBatch]:
            done = 0
            for b in first:
                done += b.num_rows
                if progress:
                    progress(done, total)
                if b.num_rows:
                    yield b
            for raw in it:
                b = self._finish(raw).cast(schema)
                done += b.num_rows
                if progress:
                    progress(done, total)
                yield b

        return pa.RecordBatchReader.from_batches(schema, rest())

    def to_arrow(self) -> pa.Table:
        return self.to_reader().read_all()

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def to_parquet(self, path: str | Path, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Write the rows to a Parquet file batch by batch; returns the number of rows.
        ``progress(rows_done, rows_total)`` is called after each batch."""
        reader = self.to_reader(progress)
        rows = 0
        with pq.ParquetWriter(str(path), reader.schema) as w:
            for b in reader:
                w.write_batch(b)
                rows += b.num_rows
        return rows

    def persist(
        self, name: str, *, overwrite: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> SavedDataset:
        """Store the rows as a saved dataset with the definition versions and the
        entity rows' fingerprint; ``store.get_saved_dataset(name)`` reads it back."""
        if self._persist is None:
            from quiver.errors import UnsupportedError

            raise UnsupportedError("this job was not made by a FeatureStore; it cannot be persisted")
        self._progress = progress
        try:
            return self._persist(self, name, overwrite)
        finally:
            self._progress = None

    def __repr__(self) -> str:
        return f"RetrievalJob(features={self.features}, entity_columns={self.plan.entity_columns})"


