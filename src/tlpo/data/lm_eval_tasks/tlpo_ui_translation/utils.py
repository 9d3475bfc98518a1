"""Helpers that the tlpo_ui_translation task YAML names with `!function`."""

import json
from pathlib import Path

import datasets

ITEMS_FILE = Path(__file__).with_name("ui_translation.jsonl")


def load_items(**_options) -> datasets.DatasetDict:
    """Load the task items from the JSONL file beside this module, without the datasets cache."""
    with ITEMS_FILE.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def numbered_choices(doc: dict) -> list[str]:
    """Return each choice as the first line of a numbered answer, "1. <translation>"."""
    return [f"1. {choice}" for choice in doc["choices"]]
