import json
import socket

import pytest
from test_lcb_generation import make_test_sets
from tiny_chat_model import build_tiny_chat_model

from tlpo.cli import main

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return build_tiny_chat_model(root / "base-chat", seed=0), build_tiny_chat_model(root / "tuned-chat", seed=1)


@pytest.fixture()
def no_network(monkeypatch):
    """Make every outgoing connection of this process fail, as on a machine without network."""

    def fail_to_connect(*args, **kwargs):
        raise OSError("network is unreachable in this test")

    monkeypatch.setattr(socket.socket, "connect", fail_to_connect)
    monkeypatch.setattr(socket, "create_connection", fail_to_connect)


def test_eval_before_after_offline(models, tmp_path, no_network, capsys):
    base, tuned = models
    test_sets = make_test_sets(tmp_path / "test_sets")
    word_list = tmp_path / "english_words.txt"
    word_list.write_text("about\nthere\nwhich\nthank\nworld\n", encoding="utf-8")
    out = tmp_path / "eval"
    argv = [
        "eval", "--model", str(tuned), "--base", str(base), "--test-sets", str(test_sets),
        "--word-list", str(word_list), "--output-dir", str(out), "--max-new-tokens", "12",
        "--limit", "4", "--samples", "3", "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "delta:" in printed

    document = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert list(document["models"]) == ["base", "model"]
    base_headline = document["models"]["base"]["headline"]
    model_headline = document["models"]["model"]["headline"]
    assert set(model_headline) == {"LCB monolingual", "LCB crosslingual", "rules monolingual", "rules crosslingual", "lm-eval"}
    assert model_headline["lm-eval"]["tlpo_ui_translation"] in (0.0, 25.0, 50.0, 75.0, 100.0)
    for section, metrics in document["deltas"].items():
        for metric, delta in metrics.items():
            assert delta == pytest.approx(model_headline[section][metric] - base_headline[section][metric])
    assert document["settings"]["prompts"] == 15

    with (out / "model_completions.csv").open(encoding="utf-8") as handle:
        assert handle.readline().strip() == "id,model,completion,task,source,language"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Sample responses" in page
    assert page.count('class="tlpo-report tlpo-sample"') == 3
    assert "data:image/png;base64," in page

    # A rerun reuses the written completions and gives the same numbers.
    assert main(argv) == 0
    again = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert again["models"]["model"]["headline"] == model_headline


def test_eval_default_model_layout(models, tmp_path, capsys):
    """A model folder with eval_prompts.jsonl and probe.jsonl, as the embedded default model has."""
    _base, tuned = models
    rows = [
        {"prompt": "Translate into French:\n1. Save\n2. Delete\n3. Search", "language": "fr", "reference": "1. Enregistrer"},
        {"prompt": "Translate into Japanese:\n1. Save\n2. Delete\n3. Search", "language": "ja", "reference": "1. 保存"},
    ]
    for name in ("eval_prompts.jsonl", "probe.jsonl"):
        (tuned / name).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    out = tmp_path / "eval"
    code = main(["eval", "--model", str(tuned), "--output-dir", str(out), "--max-new-tokens", "8", "--no-lm-eval", "--no-progress"])
    assert code == 0
    document = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    headline = document["models"]["model"]["headline"]
    assert set(headline) == {"rules eval_prompts", "probe"}
    assert 0.0 <= headline["probe"]["chrF"] <= 100.0
    assert "deltas" not in document


def test_eval_missing_model_folder(tmp_path, capsys):
    code = main(["eval", "--model", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "--model folder not found" in capsys.readouterr().err


def test_eval_without_prompts(models, tmp_path, capsys):
    base, _tuned = models
    code = main(["eval", "--model", str(base), "--output-dir", str(tmp_path / "out"), "--no-lm-eval"])
    assert code == 2
    assert "no consistency prompts" in capsys.readouterr().err
