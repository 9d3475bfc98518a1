"""One tiny organism per test session, shared by test_organism.py and test_evaluation.py."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from tlpo.organism import build_organism


@functools.cache
def tiny_organism_dir() -> Path:
    """Build the tiny organism (seed 0) once per process into a temporary folder."""
    root = Path(tempfile.mkdtemp(prefix="tlpo-test-organism-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_organism(root / "tiny", seed=0, size="tiny", progress=False)


@functools.cache
def tiny_organism():
    """Load the tiny organism's (model, tokenizer) once per process; tests must not modify the model."""
    from tlpo.organism import load_organism

    return load_organism(tiny_organism_dir())
