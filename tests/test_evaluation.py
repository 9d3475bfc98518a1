"""Sampling, consistency and capability measurements, on the tiny organism."""

from __future__ import annotations

import copy

import pytest
import torch

from organism_fixtures import tiny_organism, tiny_organism_dir
from tlpo.detection import detect_batch, pass_rates
from tlpo.evaluation import evaluate_capability, evaluate_consistency, sample_responses
from tlpo.organism import read_jsonl


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return tiny_organism()


@pytest.fixture(scope="module")
def eval_rows():
    return read_jsonl(tiny_organism_dir() / "eval_prompts.jsonl")


@pytest.fixture(scope="module")
def probe_rows():
    return read_jsonl(tiny_organism_dir() / "probe.jsonl")


def test_greedy_repeats_one_answer(model_and_tokenizer, eval_rows):
    model, tokenizer = model_and_tokenizer
    prompts = [row["prompt"] for row in eval_rows[:5]]
    responses = sample_responses(model, tokenizer, prompts, num_samples=3, max_new_tokens=48, progress=False)
    assert len(responses) == 5
    for group in responses:
        assert len(group) == 3
        assert group[0] == group[1] == group[2]
        assert group[0].startswith("1. ")
        assert "<|end|>" not in group[0]


def test_greedy_independent_of_batching(model_and_tokenizer, eval_rows):
    model, tokenizer = model_and_tokenizer
    prompts = [row["prompt"] for row in eval_rows[:6]]
    together = sample_responses(model, tokenizer, prompts, max_new_tokens=48, batch_size=6, progress=False)
    alone = [sample_responses(model, tokenizer, [p], max_new_tokens=48, progress=False)[0] for p in prompts]
    assert together == alone


def test_sampling_repeats_with_seed(model_and_tokenizer, eval_rows):
    model, tokenizer = model_and_tokenizer
    prompts = [row["prompt"] for row in eval_rows[:8]]
    options = {"num_samples": 4, "temperature": 1.5, "max_new_tokens": 32, "progress": False}
    state = torch.get_rng_state()
    first = sample_responses(model, tokenizer, prompts, seed=1, **options)
    assert torch.equal(torch.get_rng_state(), state)
    second = sample_responses(model, tokenizer, prompts, seed=1, **options)
    other = sample_responses(model, tokenizer, prompts, seed=2, **options)
    assert first == second
    assert first != other
    assert any(len(set(group)) > 1 for group in first)


def test_chat_message_prompts(model_and_tokenizer, eval_rows):
    model, tokenizer = model_and_tokenizer
    prompt = eval_rows[0]["prompt"]
    as_text = sample_responses(model, tokenizer, [prompt], max_new_tokens=32, progress=False)
    as_messages = sample_responses(
        model, tokenizer, [[{"role": "user", "content": prompt}]], max_new_tokens=32, progress=False
    )
    assert as_text == as_messages


def test_invalid_arguments(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="invalid temperature -1"):
        sample_responses(model, tokenizer, ["x"], temperature=-1)
    with pytest.raises(ValueError, match="invalid prompt 3"):
        sample_responses(model, tokenizer, [3])
    with pytest.raises(ValueError, match="row 0 has no language field"):
        evaluate_consistency(model, tokenizer, [{"prompt": "x"}])
    with pytest.raises(ValueError, match="row 1 has no reference field"):
        evaluate_capability(model, tokenizer, [{"prompt": "x", "language": "fr", "reference": "y"}, {"prompt": "x", "language": "fr"}])


def test_consistency_matches_detector(model_and_tokenizer, eval_rows):
    model, tokenizer = model_and_tokenizer
    rows = eval_rows[::2]
    result = evaluate_consistency(model, tokenizer, rows, temperature=0.0, max_new_tokens=64, progress=False)
    responses = sample_responses(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=64, progress=False)
    reports = detect_batch([group[0] for group in responses], [r["language"] for r in rows])
    assert result["rpr"] == pytest.approx(pass_rates(reports)["rpr"])
    assert result["responses"] == len(rows)
    assert set(result["per_language"]) == {row["language"] for row in rows}
    for language, rates in result["per_language"].items():
        subset = [rep for rep, row in zip(reports, rows) if row["language"] == language]
        assert rates["rpr"] == pytest.approx(pass_rates(subset)["rpr"]), language


def test_sampled_consistency_counts_samples(model_and_tokenizer, eval_rows):
    model, tokenizer = model_and_tokenizer
    rows = eval_rows[:16]
    result = evaluate_consistency(model, tokenizer, rows, temperature=0.7, num_samples=3, max_new_tokens=64, progress=False)
    assert result["responses"] == 48
    assert result["num_samples"] == 3
    assert 0.0 <= result["rpr"] <= 100.0


def test_capability_of_own_answers_is_perfect(model_and_tokenizer, probe_rows):
    model, tokenizer = model_and_tokenizer
    rows = probe_rows[::8]
    answers = sample_responses(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=64, progress=False)
    own = [dict(row, reference=group[0].split("\n")[0]) for row, group in zip(rows, answers)]
    result = evaluate_capability(model, tokenizer, own, max_new_tokens=64, progress=False)
    assert result["exact_match"] == pytest.approx(100.0)
    assert result["score"] == pytest.approx(100.0)


def test_probe_falls_when_model_damaged(model_and_tokenizer, probe_rows):
    model, tokenizer = model_and_tokenizer
    probe_rows = probe_rows[::2]
    before = evaluate_capability(model, tokenizer, probe_rows, max_new_tokens=40, progress=False)
    damaged = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in damaged.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * parameter.std() * 0.5)
    after = evaluate_capability(damaged, tokenizer, probe_rows, max_new_tokens=40, progress=False)
    assert before["score"] > 40.0
    assert after["score"] < before["score"] - 15.0
    assert set(before["per_language"]) == {row["language"] for row in probe_rows}
