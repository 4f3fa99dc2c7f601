"""Example feature repositories that ``quiver init --example`` writes."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

__all__ = ["EXAMPLES", "create_example"]

EXAMPLES = ("fraud",)


def create_example(path: str | Path, example: str = "fraud", scale: str = "small") -> Path:
    """Write a working feature repository (definitions, quiver.yaml, data) at ``path``."""
    from quiver.errors import InputError

    if example not in EXAMPLES:
        raise InputError(f"unknown example {example!r}; known: {', '.join(EXAMPLES)}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    if (root / "quiver.yaml").exists():
        raise InputError(f"{root} already holds a feature repository (quiver.yaml); choose an empty folder")
    pkg = resources.files(f"quiver.examples.{example}")
    for name in ("quiver.yaml", "features.py"):
        with resources.as_file(pkg / name) as src:
            shutil.copyfile(src, root / name)
    from datetime import UTC, datetime, timedelta

    from quiver.examples.fraud.data import SCALES, generate

    # the data ends at the current hour, so online reads and freshness checks see live values
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    generate(root / "data", scale=scale, start=end - timedelta(days=SCALES[scale][2]))
    return root
