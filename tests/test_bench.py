"""Measurements and reports of `tlpo bench`, on tiny random models built here."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tlpo import bench


def _tiny_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


SEQUENCES = [
    {"prompt_ids": [5, 6, 7], "response_ids": [8, 9], "language": "ko"},
    {"prompt_ids": [10, 11], "response_ids": [12, 13, 14, 15], "language": "ko"},
]


def test_kl_of_model_with_itself_is_zero():
    model = _tiny_llama(0)
    assert bench.kl_from_base(model, model, SEQUENCES) == pytest.approx(0.0, abs=1e-6)


def test_kl_matches_per_sequence_computation():
    policy, base = _tiny_llama(0), _tiny_llama(1)
    expected_sum, expected_count = 0.0, 0
    with torch.no_grad():
        for item in SEQUENCES:
            ids = torch.tensor([item["prompt_ids"] + item["response_ids"]])
            policy_logp = torch.log_softmax(policy(input_ids=ids).logits[0], -1)
            base_logp = torch.log_softmax(base(input_ids=ids).logits[0], -1)
            start = len(item["prompt_ids"]) - 1
            for position in range(start, start + len(item["response_ids"])):
                p = policy_logp[position].exp()
                expected_sum += float((p * (policy_logp[position] - base_logp[position])).sum())
                expected_count += 1
    expected = expected_sum / expected_count
    # Batched with right padding must equal one sequence at a time.
    assert bench.kl_from_base(policy, base, SEQUENCES, batch_size=2) == pytest.approx(expected, rel=1e-4)
    assert expected > 0


def test_kl_without_clean_prompts_is_nan():
    model = _tiny_llama(0)
    assert math.isnan(bench.kl_from_base(model, model, []))


def test_cost_meter_counts_generate_steps():
    model = _tiny_llama(0)
    input_ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with bench.CostMeter() as meter:
        model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=4,
            min_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=1,
        )
    # One prefill over 2 x 3 positions, then 3 decoding steps of one position per row.
    # The prefill's logits give the 1st token, so 4 new tokens need only 3 decoding steps.
    assert meter.forward_passes == 4
    assert meter.forward_tokens == 2 * 3 + 3 * 2
    assert meter.tokens_generated == 2 * 4
    with torch.no_grad():
        model(input_ids=input_ids)
    assert meter.forward_passes == 4, "the meter counted a call after it was closed"


def test_take_per_language_keeps_file_order():
    rows = [{"language": language, "prompt": str(index)} for index, language in enumerate("aabbbab")]
    kept = bench.take_per_language(rows, 2)
    assert [row["prompt"] for row in kept] == ["0", "1", "2", "3"]
    assert bench.take_per_language(rows, None) == rows


def _run(rpr, capability, kl, seconds, per_language, nll=0.5):
    return {
        "rpr": rpr,
        "lpr": rpr,
        "wpr": 100.0,
        "capability": capability,
        "probe_nll": nll,
        "kl_clean": kl,
        "seconds": seconds,
        "time_to_final": seconds / 2,
        "curve": [
            {"step": 0, "seconds": 0.0, "rpr": 50.0, "kl_clean": 0.0},
            {"step": 5, "seconds": seconds, "rpr": rpr, "kl_clean": kl},
        ],
        "tokens_generated": 10,
        "forward_passes": 5,
        "per_language": {language: {"rpr": value} for language, value in per_language.items()},
    }


def _results(tmp_path):
    runs = {
        "base": {0: _run(50.0, 80.0, 0.0, 0.0, {"ko": 40.0, "ja": 60.0}), 1: _run(50.0, 80.0, 0.0, 0.0, {"ko": 40.0, "ja": 60.0})},
        "tlpo": {
            0: _run(90.0, 79.0, 0.01, 10.0, {"ko": 85.0, "ja": 95.0}, nll=0.6),
            1: _run(80.0, 77.0, 0.03, 12.0, {"ko": 75.0, "ja": 85.0}, nll=0.8),
        },
    }
    data = bench.BenchData(
        model_dir=tmp_path, train_rows=[{}] * 3, eval_rows=[{}] * 4, probe_rows=[{}] * 5, track_rows=[{}] * 2
    )
    return bench.summarize(runs, seeds=[0, 1], quick=False, budget=bench.QUICK_BUDGET, data=data, command="tlpo bench")


def test_summarize_means_and_drop(tmp_path):
    results = _results(tmp_path)
    tlpo = results["methods"]["tlpo"]
    assert tlpo["rpr"] == pytest.approx(85.0)
    assert tlpo["rpr_std"] == pytest.approx(math.sqrt(50.0))
    assert tlpo["capability"] == pytest.approx(78.0)
    assert tlpo["capability_drop"] == pytest.approx(2.0)
    assert tlpo["kl_clean"] == pytest.approx(0.02)
    assert tlpo["seconds"] == pytest.approx(11.0)
    assert tlpo["time_to_final"] == pytest.approx(5.5)
    assert tlpo["probe_nll_increase"] == pytest.approx(0.2)
    assert tlpo["rpr_per_language"] == {"ja": pytest.approx(90.0), "ko": pytest.approx(80.0)}
    assert set(tlpo["per_seed"]) == {"0", "1"}
    json.dumps(results)  # results.json must be serialisable


def test_reports_name_every_method(tmp_path):
    results = _results(tmp_path)
    table = bench.markdown_table(results)
    assert "| tlpo | 85.0 ± 7.1 |" in table
    assert "| base | 50.0 ± 0.0 |" in table
    assert "| method | ja | ko |" in table
    # The mean curve of the two seeds: step 5 at (10 + 12) / 2 seconds and (90 + 80) / 2 RPR.
    assert "| tlpo | 50.0 (0 s) | 85.0 (11 s) |" in table
    # Seed 0 reached RPR 90 at step 5 with KL 0.01. Seed 1 ended at 80 and never did.
    assert "| tlpo | 0.0100 (1/2) | 0.0100 (1/2) | not reached (0/2) |" in table
    assert "| method | RPR ≥ 85 | RPR ≥ 90 | RPR ≥ 95 |" in table
    assert "- yes: TLPO's KL on never-confused prompts is the lowest of all methods" not in table, "no baseline ran"
    path = tmp_path / "results.png"
    bench.plot_results(results, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_claim_checks_compare_with_best_baseline(tmp_path):
    results = _results(tmp_path)
    results["methods"]["grpo"] = dict(
        results["methods"]["tlpo"], rpr=86.5, capability_drop=1.0, probe_nll_increase=0.3, kl_clean=0.05,
        time_to_final=11.0,
    )
    checks = {claim: (holds, numbers) for claim, holds, numbers in bench.claim_checks(results)}
    holds, numbers = checks["TLPO's RPR is at least the best baseline's minus 1 point"]
    assert holds is False
    assert numbers == "TLPO 85.0, best baseline grpo 86.5"
    assert checks["TLPO's capability drop (chrF) is the lowest of all methods"][0] is False
    assert checks["TLPO's increase of the probe NLL is the lowest of all methods"][0] is True
    assert checks["TLPO's KL on never-confused prompts is the lowest of all methods"][0] is True
    # TLPO reached its final RPR after 5.5 s, GRPO after 11 s: exactly half.
    assert checks["TLPO's wall time to its final RPR is at most half of GRPO's"][0] is True
    assert "- no: TLPO's capability drop (chrF) is the lowest of all methods" in bench.markdown_table(results)


def test_time_to_final_first_near_point():
    curve = [
        {"step": 0, "seconds": 0.0, "rpr": 60.0},
        {"step": 5, "seconds": 4.0, "rpr": 91.5},
        {"step": 10, "seconds": 8.0, "rpr": 89.0},
        {"step": 15, "seconds": 12.0, "rpr": 92.0},
    ]
    assert bench.time_to_final(curve, 1.0) == 4.0
    assert bench.time_to_final(curve, 0.0) == 12.0
    assert bench.time_to_final([], 1.0) is None


def test_kl_at_rpr_first_point_reached():
    curve = [
        {"step": 0, "seconds": 0.0, "rpr": 60.0, "kl_clean": 0.0},
        {"step": 5, "seconds": 4.0, "rpr": 90.0, "kl_clean": 0.02},
        {"step": 10, "seconds": 8.0, "rpr": 95.0, "kl_clean": 0.05},
    ]
    assert bench.kl_at_rpr(curve, 85.0) == 0.02
    assert bench.kl_at_rpr(curve, 95.0) == 0.05
    assert bench.kl_at_rpr(curve, 96.0) is None


def test_cost_meter_paused_counts_nothing():
    model = _tiny_llama(4)
    with bench.CostMeter() as meter:
        model(input_ids=torch.tensor([[5, 6, 7]]))
        with meter.paused():
            model(input_ids=torch.tensor([[5, 6, 7]]))
    assert meter.forward_passes == 1
    assert meter.forward_tokens == 3


def test_reference_nll_matches_hand_sum():
    model = _tiny_llama(3)
    with torch.no_grad():
        expected = []
        for item in SEQUENCES:
            ids = torch.tensor([item["prompt_ids"] + item["response_ids"]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            start = len(item["prompt_ids"])
            for offset, token in enumerate(item["response_ids"]):
                expected.append(-float(log_probs[start - 1 + offset, token]))
    assert bench.reference_nll(model, SEQUENCES, batch_size=1) == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    # Batching pads the shorter sequence, and the padding must not change the value.
    assert bench.reference_nll(model, SEQUENCES, batch_size=2) == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_unknown_method_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown method.*ppo"):
        bench.run_bench(tmp_path, methods=["ppo"], model_dir=tmp_path)


def test_missing_prompt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_prompts.jsonl not found"):
        bench.load_bench_data(tmp_path, bench.QUICK_BUDGET)


# The tiny Llama and tokenizer of the baseline tests, shared so both files build the same model.
from test_baselines import ROWS, tiny_model_dir  # noqa: E402,F401


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def test_bench_runs_and_resumes(tiny_model_dir, tmp_path):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    for name in ("train_prompts.jsonl", "eval_prompts.jsonl", "probe.jsonl"):
        _write_jsonl(model_dir / name, ROWS)
    output_dir = tmp_path / "bench"

    results = bench.run_bench(output_dir, seeds=[0], quick=True, methods=["sft"], model_dir=model_dir)
    assert set(results["methods"]) == {"base", "sft"}
    sft = results["methods"]["sft"]
    for key in ("rpr", "capability", "kl_clean", "seconds"):
        assert sft[key] is not None, f"sft has no {key}"
    assert sft["kl_clean"] >= 0.0 or math.isnan(sft["kl_clean"])
    assert sft["seconds"] > 0
    assert results["methods"]["base"]["kl_clean"] == 0.0
    for name in ("results.json", "results.md", "results.png"):
        assert (output_dir / name).is_file(), f"{name} was not written"
    saved = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    assert saved["methods"]["sft"]["per_seed"]["0"]["rpr"] == sft["rpr"]

    curve = sft["per_seed"]["0"]["curve"]
    assert curve[0] == {"step": 0, "seconds": 0.0, "rpr": results["methods"]["base"]["per_seed"]["0"]["curve"][0]["rpr"],
                        "kl_clean": 0.0}
    assert all(point["kl_clean"] >= 0.0 or math.isnan(point["kl_clean"]) for point in curve)
    assert curve[-1]["step"] == sft["per_seed"]["0"]["steps"] > 0
    assert all(a["seconds"] <= b["seconds"] for a, b in zip(curve, curve[1:]))
    assert sft["time_to_final"] in [point["seconds"] for point in curve]
    assert not (output_dir / "runs" / "sft-seed0" / "model").exists(), "the measured model was kept"

    metrics_path = output_dir / "runs" / "sft-seed0" / "metrics.json"
    written = metrics_path.stat().st_mtime_ns
    again = bench.run_bench(output_dir, seeds=[0], quick=True, methods=["sft"], model_dir=model_dir)
    assert metrics_path.stat().st_mtime_ns == written, "the finished run was trained again"
    assert again["methods"]["sft"]["rpr"] == sft["rpr"]

    other_budget = bench.budget_with(bench.QUICK_BUDGET, {"learning_rate": 1e-4})
    with pytest.raises(ValueError, match="contains runs made with another budget or model"):
        bench.run_bench(output_dir, seeds=[0], budget=other_budget, methods=["sft"], model_dir=model_dir)


def test_budget_overrides_merge_method_settings():
    budget = bench.budget_with(bench.FULL_BUDGET, {"dpo": {"beta": 0.5}, "eval_samples": 2})
    assert budget.dpo["beta"] == 0.5
    assert budget.dpo["learning_rate"] == bench.FULL_BUDGET.dpo["learning_rate"], "the other DPO settings were lost"
    assert budget.eval_samples == 2
    # A shared learning rate also replaces DPO's own one, so a user who lowers it for a
    # large model does not keep DPO at the embedded model's rate.
    budget = bench.budget_with(bench.FULL_BUDGET, {"learning_rate": 1e-6})
    assert budget.min_learning_rate == pytest.approx(5e-7), "the decay floor stayed above the new peak"
    budget = bench.budget_with(bench.FULL_BUDGET, {"learning_rate": 1e-6, "min_learning_rate": 1e-7, "prompts_per_step": 4})
    assert "learning_rate" not in budget.dpo
    assert budget.grpo["per_device_train_batch_size"] == 4 * bench.FULL_BUDGET.num_generations
    assert budget.tlpo["per_device_train_batch_size"] == 4
    # A method's own peak without a floor gets one at the budget's ratio, not the old floor.
    budget = bench.budget_with(bench.FULL_BUDGET, {"dpo": {"learning_rate": 1e-5}})
    assert budget.dpo["lr_scheduler_kwargs"] == {"min_lr": pytest.approx(5e-6)}
    bench.check_budget(budget)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lr": 1e-3}, "unknown budget field 'lr'; valid fields: train_prompts_per_language"),
        ({"track_every": 2.5}, "'track_every' must be a whole number"),
        ({"dpo": 0.1}, "'dpo' must be a mapping"),
        ({"learning_rate": "fast"}, "'learning_rate' must be a number"),
    ],
)
def test_bad_budget_fields_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        bench.budget_with(bench.QUICK_BUDGET, overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rate": 0.0}, "learning_rate=0.0; it must be above 0"),
        ({"num_generations": 1}, "num_generations=1; it must be at least 2"),
        ({"eval_prompts_per_language": 0}, "eval_prompts_per_language=0; it must be at least 1"),
        ({"warmup_ratio": 1.0}, "warmup_ratio=1.0; it must be below 1"),
        ({"min_learning_rate": 0.1}, "min_learning_rate=0.1 is above learning_rate"),
        ({"dpo": {"betaa": 0.5}}, "unknown DPOConfig field.*dpo settings: betaa"),
        ({"tlpo": {"num_candidate": 8}}, "unknown TLPOConfig field.*tlpo settings: num_candidate"),
        ({"dpo": {"beta": "fast"}}, "invalid budget setting dpo.beta='fast'; it must be a finite number"),
        ({"learning_rate": float("nan")}, "learning_rate=nan; it must be a finite number"),
        ({"dpo": {"learning_rate": 1e-5, "lr_scheduler_kwargs": {"min_lr": 1e-4}}}, "the dpo decay floor"),
    ],
)
def test_invalid_budget_values_are_rejected(overrides, message):
    budget = bench.budget_with(bench.QUICK_BUDGET, overrides)
    with pytest.raises(ValueError, match=message):
        bench.check_budget(budget)


def test_default_budgets_pass_the_checks():
    bench.check_budget(bench.FULL_BUDGET)
    bench.check_budget(bench.QUICK_BUDGET)


def test_cli_rejects_bad_budget_file(tmp_path, capsys):
    from tlpo.cli import main

    path = tmp_path / "budget.yaml"
    path.write_text("learning_rate: 1e-5\nsteps: 3\n", encoding="utf-8")
    assert main(["bench", "--quick", "--budget", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    assert "unknown budget field 'steps'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "a rejected budget still created the output folder"


def test_cli_rejects_budget_typo_early(tmp_path, capsys):
    from tlpo.cli import main

    path = tmp_path / "budget.yaml"
    path.write_text("dpo:\n  betaa: 0.5\n", encoding="utf-8")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert main(["bench", "--quick", "--budget", str(path), "--model", str(model_dir), "--output-dir", str(tmp_path / "out")]) == 2
    assert "unknown DPOConfig field(s) in the budget's dpo settings: betaa" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
