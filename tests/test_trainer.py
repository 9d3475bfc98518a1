"""TLPOTrainer on a tiny random Llama: updates, metrics, LoRA reference, resume, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer_support import PROMPTS, build_tiny_model, load_tiny_model, tiny_config
from transformers import TrainerCallback

from tlpo.data import PromptDataError
from tlpo.losses import candidate_logprobs
from tlpo.trainer import STATE_FILE, TLPOTrainer

LOGGED_METRICS = [
    "loss",
    "learning_rate",
    "rollout/pass_rate",
    "confusion/points",
    "confusion/positive_candidates",
    "advantage/abs_mean",
    "kl/mean",
    "clip_ratio",
    "update/items",
]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matrices gain nothing from threads, and other test processes share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def parameters_of(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def test_training_changes_parameters(model_dir, tmp_path):
    model, tokenizer = load_tiny_model(model_dir)
    before = parameters_of(model)

    trainer = TLPOTrainer(model, tiny_config(tmp_path, max_steps=2), train_dataset=PROMPTS, processing_class=tokenizer)
    trainer.train()

    changed = [name for name, parameter in model.named_parameters() if not torch.equal(before[name], parameter)]
    assert len(changed) == len(before)


def test_training_logs_metrics(model_dir, tmp_path):
    model, tokenizer = load_tiny_model(model_dir)
    trainer = TLPOTrainer(model, tiny_config(tmp_path, max_steps=2), train_dataset=PROMPTS, processing_class=tokenizer)
    trainer.train()

    step_logs = [entry for entry in trainer.state.log_history if "rollout/pass_rate" in entry]
    assert [entry["step"] for entry in step_logs] == [1, 2]
    for entry in step_logs:
        for key in LOGGED_METRICS:
            assert key in entry, key
        assert 0 <= entry["rollout/pass_rate"] <= 100
        assert entry["kl/mean"] >= 0
    # A random model answers Korean, Japanese and Chinese prompts with confused text.
    assert step_logs[0]["confusion/points"] > 0
    assert step_logs[0]["update/items"] == step_logs[0]["confusion/points"] * 4
    # The policy that sampled is the policy being trained at step 1, so the reference
    # (the same weights) is at KL 0; step 2 trains a moved policy.
    assert step_logs[0]["kl/mean"] == pytest.approx(0.0, abs=1e-5)
    assert step_logs[1]["kl/mean"] > 0


def test_items_per_step_caps_the_update(model_dir, tmp_path):
    model, tokenizer = load_tiny_model(model_dir)
    config = tiny_config(tmp_path, max_steps=1, items_per_step=8)
    trainer = TLPOTrainer(model, config, train_dataset=PROMPTS, processing_class=tokenizer)
    trainer.train()

    log = next(entry for entry in trainer.state.log_history if "update/items" in entry)
    assert log["update/items"] == 8
    assert log["update/queued_points"] == log["confusion/points"] - 2
    assert len(trainer.queue) == log["update/queued_points"]


def test_lora_reference_is_base_model(model_dir, tmp_path):
    from peft import LoraConfig

    model, tokenizer = load_tiny_model(model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    # items_per_step=4 trains on one point per step, so points mined at step 2 (after
    # the adapter moved away from zero) are still queued at the end.
    config = tiny_config(tmp_path, max_steps=2, items_per_step=4, learning_rate=5e-2)
    trainer = TLPOTrainer(model, config, train_dataset=PROMPTS, processing_class=tokenizer, peft_config=lora)
    trainer.train()

    assert trainer.ref_model is None
    policy = trainer.model
    # Every module the trainer references shares the policy's weights: no second copy.
    trainer_weights = {
        parameter.data_ptr()
        for value in vars(trainer).values()
        if isinstance(value, torch.nn.Module)
        for parameter in value.parameters()
    }
    assert trainer_weights == {parameter.data_ptr() for parameter in policy.parameters()}

    base, _ = load_tiny_model(model_dir)
    point = trainer.queue[-1]
    with torch.no_grad():
        inputs = point.prefix_ids[None]
        positions = torch.tensor([len(point.prefix_ids) - 1])
        mask = torch.ones_like(inputs)
        base_logp = candidate_logprobs(base, inputs, mask, positions, point.candidate_ids[None])[0]
        policy_logp = candidate_logprobs(policy, inputs, mask, positions, point.candidate_ids[None])[0]
    torch.testing.assert_close(point.logp_ref, base_logp, atol=1e-5, rtol=1e-5)
    # The adapter did move the policy, so the check above could have failed.
    assert (policy_logp - base_logp).abs().max() > 1e-4


class KillAfterStep(TrainerCallback):
    """Raise at the start of the step after `step`, as if the process were killed there."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"killed after step {self.step}")


def test_resume_matches_uninterrupted(model_dir, tmp_path):
    # items_per_step=4 (one point per step) leaves points queued at the checkpoint, so
    # the resumed run only matches if the queue is restored too.
    settings = dict(max_steps=4, items_per_step=4, save_strategy="steps", save_steps=2)

    model, tokenizer = load_tiny_model(model_dir)
    uninterrupted = TLPOTrainer(
        model, tiny_config(tmp_path / "full", **settings), train_dataset=PROMPTS, processing_class=tokenizer
    )
    uninterrupted.train()
    expected = parameters_of(uninterrupted.model)

    model, tokenizer = load_tiny_model(model_dir)
    killed = TLPOTrainer(
        model,
        tiny_config(tmp_path / "killed", **settings),
        train_dataset=PROMPTS,
        processing_class=tokenizer,
        callbacks=[KillAfterStep(2)],
    )
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    checkpoint = tmp_path / "killed" / "checkpoint-2"
    queued = torch.load(checkpoint / STATE_FILE.format(rank=0), weights_only=True)["queue"]
    assert len(queued) > 0

    model, tokenizer = load_tiny_model(model_dir)
    resumed = TLPOTrainer(
        model, tiny_config(tmp_path / "killed", **settings), train_dataset=PROMPTS, processing_class=tokenizer
    )
    resumed.train(resume_from_checkpoint=True)
    actual = parameters_of(resumed.model)

    assert resumed.state.global_step == 4
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "Hello"}], "missing 'language'"),
        ([{"prompt": "Hello", "language": "xx-unknown"}], "xx-unknown"),
        ([{"prompt": "   ", "language": "ko"}], "prompt is empty"),
        ([{"language": "ko"}], "missing 'prompt'"),
        ([{"prompt": "a " * 300, "language": "ko"}], "exceeds the model's context of 256 tokens"),
        ([], "no prompts"),
    ],
)
def test_bad_prompts_fail_before_training(model_dir, tmp_path, rows, message):
    model, tokenizer = load_tiny_model(model_dir)
    with pytest.raises(PromptDataError, match=message):
        TLPOTrainer(model, tiny_config(tmp_path), train_dataset=rows, processing_class=tokenizer)


def test_tokenizer_without_chat_template_fails(model_dir, tmp_path):
    model, tokenizer = load_tiny_model(model_dir)
    tokenizer.chat_template = None
    with pytest.raises(PromptDataError, match="no chat template"):
        TLPOTrainer(model, tiny_config(tmp_path), train_dataset=PROMPTS, processing_class=tokenizer)


def test_train_cli_bad_prompts_exit_code(model_dir, tmp_path, capsys):
    from tlpo.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hello", "language": "ko"}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
    code = main(["train", "--model", str(model_dir), "--prompts", str(prompts), "--output-dir", str(tmp_path / "out")])

    assert code == 2
    error = capsys.readouterr().err
    assert "row 2" in error
    assert "missing 'language'" in error
    assert not (tmp_path / "out").exists()


def test_train_cli_flags_override_yaml(model_dir, tmp_path):
    import argparse

    from tlpo.cli import build_parser
    from tlpo.cli.train import build_config

    config_file = tmp_path / "config.yaml"
    config_file.write_text("num_candidates: 8\nbeta: 0.1\nlearning_rate: 0.001\n")
    args = build_parser().parse_args(
        ["train", "--output-dir", str(tmp_path), "--config", str(config_file), "--beta", "0.2"]
    )
    assert isinstance(args, argparse.Namespace)
    config = build_config(args)

    assert config.num_candidates == 8
    assert config.beta == 0.2
    assert config.learning_rate == 0.001
    assert config.temperature == 0.6


def test_unsupported_tokenizer_decoder_fails(model_dir, tmp_path):
    from tokenizers import decoders

    model, tokenizer = load_tiny_model(model_dir)
    tokenizer.backend_tokenizer.decoder = decoders.WordPiece()
    with pytest.raises(PromptDataError, match="unsupported tokenizer decoder 'WordPiece'"):
        TLPOTrainer(model, tiny_config(tmp_path), train_dataset=PROMPTS, processing_class=tokenizer)


def test_gradient_accumulation_matches_batch(model_dir, tmp_path):
    # Accumulating 2 batches of 1 prompt rolls out the same prompts with the same seeds
    # as 1 batch of 2, and trains once on all their points. SGD keeps float round-off
    # from the different batching small (Adam would magnify it for near-zero gradients).
    weights, items = {}, {}
    for name, batch, accumulation in (("batch", 2, 1), ("accumulated", 1, 2)):
        model, tokenizer = load_tiny_model(model_dir)
        config = tiny_config(
            tmp_path / name,
            max_steps=2,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            optim="sgd",
            learning_rate=0.5,
            weight_decay=0.0,
        )
        trainer = TLPOTrainer(model, config, train_dataset=PROMPTS, processing_class=tokenizer)
        trainer.train()
        weights[name] = parameters_of(trainer.model)
        logs = [entry for entry in trainer.state.log_history if "update/items" in entry]
        assert [entry["step"] for entry in logs] == [1, 2]
        items[name] = [entry["update/items"] for entry in logs]

    assert items["accumulated"] == items["batch"]
    assert items["batch"][0] > 0
    initial = parameters_of(load_tiny_model(model_dir)[0])
    assert max((weights["batch"][name] - initial[name]).abs().max().item() for name in initial) > 1e-3
    for name, value in weights["batch"].items():
        torch.testing.assert_close(weights["accumulated"][name], value, rtol=0, atol=1e-5, msg=name)


class RecordWeights(TrainerCallback):
    """Copy the policy's weights at the end of every optimizer step."""

    def __init__(self):
        self.by_step = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.by_step[state.global_step] = parameters_of(model)


def test_reference_sync_copies_policy(model_dir, tmp_path):
    model, tokenizer = load_tiny_model(model_dir)
    recorder = RecordWeights()
    config = tiny_config(tmp_path, max_steps=3, ref_model_sync_steps=2)
    trainer = TLPOTrainer(model, config, train_dataset=PROMPTS, processing_class=tokenizer, callbacks=[recorder])
    trainer.train()

    # The copy happens when step 3 starts, from the weights step 2 produced.
    reference = parameters_of(trainer.ref_model)
    for name, value in recorder.by_step[2].items():
        torch.testing.assert_close(reference[name], value, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(reference[name], value) for name, value in recorder.by_step[3].items())
