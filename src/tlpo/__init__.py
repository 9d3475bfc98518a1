"""Token-Level Policy Optimization (TLPO) against language confusion in multilingual LLMs."""

__version__ = "0.1.0"

__all__ = ["TLPOConfig", "TLPOTrainer", "detect", "detect_batch", "normalize_language"]

# The trainer pulls in transformers and PEFT, which take seconds to import, so the
# public names are loaded on first access rather than with the package.
_LAZY_IMPORTS = {
    "TLPOConfig": "tlpo.config",
    "TLPOTrainer": "tlpo.trainer",
    "detect": "tlpo.detection",
    "detect_batch": "tlpo.detection",
    "normalize_language": "tlpo.languages",
}


def __getattr__(name: str):
    if name in _LAZY_IMPORTS:
        import importlib

        return getattr(importlib.import_module(_LAZY_IMPORTS[name]), name)
    raise AttributeError(f"module 'tlpo' has no attribute {name!r}")
