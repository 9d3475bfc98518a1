"""Atomic file writes shared by every command that writes results."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _default_file_mode() -> int:
    # mkstemp creates files readable by the owner only; a result file should get the
    # mode a plain open() would give it under the process's umask.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomically(path: str | os.PathLike, text: str, *, newline: str | None = None) -> None:
    """Write `text` (UTF-8) to `path` through a synced temporary file in the same folder.

    Readers see either the old file or the whole new one, never a partial write. The
    folder must exist. `newline` is passed to `open` (None translates "\\n" to the
    platform's line end; "" and "\\n" write it unchanged).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline=newline) as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, _default_file_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomically(path: str | os.PathLike, value) -> None:
    """Write `value` as indented UTF-8 JSON with a final newline, atomically."""
    write_text_atomically(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomically(path: str | os.PathLike, rows) -> None:
    """Write one JSON object per line, atomically."""
    write_text_atomically(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
