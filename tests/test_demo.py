"""`tlpo demo` end to end on a tiny random model laid out like the embedded default model."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer_support import PROMPTS, build_tiny_model

from tlpo.cli import main
from tlpo.cli.demo import format_table

KEYS = ("rpr", "lpr", "wpr", "capability")


@pytest.fixture
def organism_like(tmp_path):
    """The tiny test model plus the three prompt files the embedded model ships with."""
    folder = build_tiny_model(tmp_path / "model")
    rows = [{"prompt": row["prompt"], "language": row["language"]} for row in PROMPTS]
    probe = [{**row, "reference": "안녕하세요"} for row in rows]
    for name, content in (("train_prompts.jsonl", rows), ("eval_prompts.jsonl", rows), ("probe.jsonl", probe)):
        (folder / name).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in content))
    return folder


def test_demo_writes_results_plot_and_model(organism_like, tmp_path, capsys):
    threads = torch.get_num_threads()
    output = tmp_path / "demo"
    try:
        code = main(
            ["demo", "--model-dir", str(organism_like), "--output-dir", str(output), "--max-steps", "1",
             "--eval-samples", "1", "--threads", "1"]
        )
    finally:
        torch.set_num_threads(threads)
    assert code == 0

    results = json.loads((output / "results.json").read_text())
    assert isinstance(results["seconds"], float)
    assert results["seconds"] > 0
    for side in ("before", "after"):
        for key in KEYS:
            assert key in results[side], (side, key)
        assert 0 <= results[side]["rpr"] <= 100
        assert 0 <= results[side]["capability"] <= 100
        assert sorted(results[side]["per_language"]) == ["ja", "ko", "zh"]
        for language, values in results[side]["per_language"].items():
            assert set(KEYS) <= set(values), (side, language)
    assert any("rollout/pass_rate" in entry for entry in results["log_history"])

    assert (output / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "model" / "config.json").is_file()
    assert (output / "model" / "tokenizer.json").is_file()
    assert not list(output.glob(".*tmp*"))

    printed = capsys.readouterr().out
    assert "mean" in printed
    assert "capability" in printed


def test_demo_rejects_folder_without_prompts(tmp_path, capsys):
    folder = build_tiny_model(tmp_path / "model")
    code = main(["demo", "--model-dir", str(folder), "--output-dir", str(tmp_path / "demo")])

    assert code == 2
    assert "eval_prompts.jsonl not found" in capsys.readouterr().err


def test_table_shows_before_and_after():
    side = {"rpr": 50.0, "lpr": 80.0, "wpr": None, "capability": 70.0,
            "per_language": {"ko": {"rpr": 50.0, "lpr": 80.0, "wpr": None, "capability": 70.0}}}
    after = {**side, "rpr": 96.5, "per_language": {"ko": {**side["per_language"]["ko"], "rpr": 96.5}}}
    lines = format_table(side, after).splitlines()

    assert lines[0].split()[:2] == ["language", "RPR"]
    assert "50.0 ->  96.5" in lines[2]
    assert lines[2].startswith("ko")
    assert lines[-1].startswith("mean")
    # Undefined rates (no line or word counted) show as "-".
    assert " - " in lines[2] + " "
