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
    from quiver.examples.fraud.data import generate

    generate(root / "data", scale=scale)
    return root
