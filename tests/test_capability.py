import json
import os

import pytest
import torch
from tiny_chat_model import build_tiny_chat_model

pytest.importorskip("lm_eval")

from tlpo.capability import SHIPPED_TASK, evaluate_lm_eval, shipped_tasks_dir  # noqa: E402

ITEMS = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "tiny-chat")
    return folder, AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def read_items():
    path = shipped_tasks_dir() / SHIPPED_TASK / "ui_translation.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def choice_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log-probabilities of `continuation` after `context`, computed directly."""
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    assert whole_ids[: len(context_ids)] == context_ids
    with torch.no_grad():
        logits = model(torch.tensor([whole_ids])).logits[0].log_softmax(-1)
    return sum(logits[position - 1, whole_ids[position]].item() for position in range(len(context_ids), len(whole_ids)))


def test_shipped_task_items():
    items = read_items()
    assert 20 <= len(items) <= 50
    for item in items:
        assert len(item["choices"]) == 4
        assert len(set(item["choices"])) == 4
        assert 0 <= item["answer"] < 4
    assert {item["language"] for item in items} == {"fr", "de", "es", "ja"}


def test_shipped_task_matches_direct_scoring(tiny):
    _folder, model, tokenizer = tiny
    result = evaluate_lm_eval(model, tokenizer, tasks=[SHIPPED_TASK], limit=ITEMS, batch_size=4)
    task = result["tasks"][SHIPPED_TASK]
    assert task["samples"] == ITEMS
    assert task["metric"] == "acc,none"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"

    # The same accuracy from log-probabilities computed here: the chat-formatted user
    # turn, then "1. <choice>" right after the assistant tag.
    correct = 0
    for item in read_items()[:ITEMS]:
        context = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Translate into {item['language_name']}:\n1. {item['english']}"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        scores = [choice_logprob(model, tokenizer, context, f"1. {choice}") for choice in item["choices"]]
        correct += int(max(range(4), key=scores.__getitem__) == item["answer"])
    assert task["accuracy"] == pytest.approx(100.0 * correct / ITEMS)
    assert result["score"] == pytest.approx(task["accuracy"])


def test_saved_model_folder_gives_same_accuracy(tiny):
    folder, model, tokenizer = tiny
    in_memory = evaluate_lm_eval(model, tokenizer, limit=8, batch_size=4)
    saved = evaluate_lm_eval(str(folder), limit=8, batch_size=4, device="cpu")
    assert saved["tasks"][SHIPPED_TASK]["accuracy"] == in_memory["tasks"][SHIPPED_TASK]["accuracy"]


def test_user_task_from_local_files(tiny, tmp_path):
    _folder, model, tokenizer = tiny
    data = tmp_path / "colours.jsonl"
    rows = [
        {"question": "Which word is a colour?", "choices": ["red", "table", "run"], "label": 0},
        {"question": "Which word is a number?", "choices": ["blue", "seven", "chair"], "label": 1},
        {"question": "Which word is an animal?", "choices": ["green", "door", "horse"], "label": 2},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (tmp_path / "colours.yaml").write_text(
        "task: my_colours\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )
    result = evaluate_lm_eval(model, tokenizer, tasks=["my_colours"], include_paths=[tmp_path], batch_size=4)
    task = result["tasks"]["my_colours"]
    assert task["samples"] == 3
    assert round(task["accuracy"], 6) in {0.0, round(100 / 3, 6), round(200 / 3, 6), 100.0}


def test_unknown_task_name(tiny):
    _folder, model, tokenizer = tiny
    with pytest.raises(ValueError, match="unknown lm-eval task.*no_such_task"):
        evaluate_lm_eval(model, tokenizer, tasks=["no_such_task"])


def test_missing_task_path(tiny, tmp_path):
    _folder, model, tokenizer = tiny
    with pytest.raises(FileNotFoundError, match="task path not found"):
        evaluate_lm_eval(model, tokenizer, include_paths=[tmp_path / "nowhere"])


def test_missing_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        evaluate_lm_eval(str(tmp_path / "no-model"))
