"""Two processes under `accelerate launch --cpu` train like one process on the same global batch.

Run as a script (`python tests/test_trainer_distributed.py MODEL_DIR OUTPUT_DIR
PER_DEVICE_BATCH`), this file trains the tiny model for two steps and saves the weights
and the logged metrics. The test launches it once with one process and a batch of 4
prompts, and once with two processes and 2 prompts each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def train_and_save(model_dir: str, output_dir: str, per_device_batch: int) -> None:
    sys.path.insert(0, str(HERE))
    from test_trainer_support import PROMPTS, load_tiny_model, tiny_config

    from tlpo.trainer import TLPOTrainer

    torch.set_num_threads(1)
    model, tokenizer = load_tiny_model(model_dir)
    # Plain SGD: an update is linear in the gradient, so float round-off in the
    # gradient stays round-off in the weights. Adam's first steps are close to
    # lr * sign(gradient) and turn round-off in near-zero gradients into full steps.
    config = tiny_config(
        output_dir,
        max_steps=2,
        per_device_train_batch_size=per_device_batch,
        optim="sgd",
        learning_rate=0.5,
        weight_decay=0.0,
    )
    trainer = TLPOTrainer(model, config, train_dataset=PROMPTS, processing_class=tokenizer)
    trainer.train()
    if trainer.is_world_process_zero():
        torch.save({name: p.detach().cpu() for name, p in trainer.model.named_parameters()}, Path(output_dir) / "weights.pt")
        logs = [entry for entry in trainer.state.log_history if "rollout/pass_rate" in entry]
        (Path(output_dir) / "logs.json").write_text(json.dumps(logs))


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="the accelerate launcher is not installed")
def test_two_processes_match_one(tmp_path):
    from test_trainer_support import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "model")
    launcher = str(Path(sys.executable).parent / "accelerate")
    if not Path(launcher).exists():
        launcher = shutil.which("accelerate")
    # NOTE: accelerate 1.16 runs `accelerate launch --cpu --num_processes 2` as ONE
    # process (its simple launcher, unless an MPI host file is given). `--multi_gpu` with
    # no visible GPU starts two processes through torchrun, which use DDP over gloo on the CPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    common = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    runs = {"one": ["--cpu", "--num_processes", "1"], "two": ["--multi_gpu", "--num_processes", "2"]}
    batches = {"one": "4", "two": "2"}
    for name, launch_flags in runs.items():
        command = [launcher, "launch", *common, *launch_flags, __file__, str(model_dir), str(tmp_path / name),
                   batches[name]]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

    one = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)
    logs_one = json.loads((tmp_path / "one" / "logs.json").read_text())
    logs_two = json.loads((tmp_path / "two" / "logs.json").read_text())

    # Same prompts, same per-sequence seeds: the same responses and confusion points.
    assert len(logs_one) == len(logs_two) == 2
    for key in ("rollout/pass_rate", "confusion/points", "update/items"):
        assert [entry[key] for entry in logs_one] == [entry[key] for entry in logs_two], key
    for entry_one, entry_two in zip(logs_one, logs_two):
        assert entry_two["loss"] == pytest.approx(entry_one["loss"], rel=1e-4, abs=1e-6)
        assert entry_two["grad_norm"] == pytest.approx(entry_one["grad_norm"], rel=1e-4)
    # The gradients differ only in float summation order (one batched loss against
    # DDP's average of two processes), about 1e-7 relative to their size.
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=0, atol=1e-5, msg=name)
    # The runs trained: the weights moved by much more than the tolerance.
    from test_trainer_support import load_tiny_model

    initial = dict(load_tiny_model(model_dir)[0].named_parameters())
    assert max((one[name] - initial[name]).abs().max().item() for name in one) > 1e-3


if __name__ == "__main__":
    train_and_save(sys.argv[1], sys.argv[2], int(sys.argv[3]))
