import os
from pathlib import Path

import pytest

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
# An LCB release folder (outputs/, expected/, test_sets/, english_words.txt); by default
# the one laid out beside the checkout.
LCB_DIR = Path(os.environ.get("TLPO_LCB_DIR", REPO_ROOT.parent / "shared" / "lcb"))


@pytest.fixture(scope="session")
def lcb_dir() -> Path:
    """The Language Confusion Benchmark data beside the checkout; skips when absent."""
    if not (LCB_DIR / "outputs").is_dir():
        pytest.skip(f"LCB data not found at {LCB_DIR}; set TLPO_LCB_DIR to an LCB data folder to run this test")
    return LCB_DIR
