"""Each TRL baseline runs a few steps on a tiny Llama built here and changes the weights.

The model is random, so it samples a mix of Hangul, Han and Latin tokens. With Korean as
the target language some of its responses are clean and some are confused. That gives
GRPO rewards that differ within a group, and DPO/ORPO prompts with both kinds of samples.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("trl")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from tlpo import baselines  # noqa: E402

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

CORPUS = [
    "안녕하세요 오늘 날씨가 좋습니다",
    "저는 학생입니다 그리고 한국어를 공부합니다",
    "이 문장을 영어로 번역해 주세요",
    "서울은 한국의 수도입니다",
    "hello world this is a short english line",
    "please translate the following sentence",
    "你好 今天天气很好",
    "我是学生",
]

ROWS = [
    {"prompt": "안녕하세요", "language": "ko", "reference": "안녕하세요 반갑습니다"},
    {"prompt": "날씨가 어때요", "language": "ko", "reference": "오늘 날씨가 좋습니다"},
    {"prompt": "서울은 어디예요", "language": "ko", "reference": "서울은 한국의 수도입니다"},
    {"prompt": "번역해 주세요", "language": "ko", "reference": "저는 학생입니다"},
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Llama and a byte-level BPE tokenizer trained on `CORPUS`."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    specials = ["<|pad|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|pad|>", eos_token="<|end|>", bos_token=None
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    return folder


def _state(folder) -> dict[str, torch.Tensor]:
    model = LlamaForCausalLM.from_pretrained(folder)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _changed_tensors(before: dict, after: dict) -> list[str]:
    return [name for name in before if not torch.equal(before[name], after[name])]


def _assert_trained(result, before, method):
    assert result.method == method
    assert result.losses, f"{method} logged no loss: {result.log_history}"
    for loss in result.losses:
        assert math.isfinite(loss), f"{method} logged a non-finite loss {loss}"
    changed = _changed_tensors(before, _state(result.output_dir))
    assert changed, f"{method} left every weight unchanged"


COMMON = {"max_steps": 3, "learning_rate": 1e-2, "per_device_train_batch_size": 2, "seed": 0}


def test_sft_changes_weights(tiny_model_dir, tmp_path):
    before = _state(tiny_model_dir)
    result = baselines.train_sft(tiny_model_dir, ROWS, tmp_path / "sft", config={**COMMON, "max_length": 64})
    _assert_trained(result, before, "sft")
    assert result.num_train_examples == len(ROWS)


def test_sft_rejects_rows_without_reference(tiny_model_dir, tmp_path):
    rows = [dict(ROWS[0]), {"prompt": "안녕", "language": "ko"}]
    with pytest.raises(ValueError, match="row 2 has no 'reference'"):
        baselines.train_sft(tiny_model_dir, rows, tmp_path / "sft", config=COMMON)


def test_unknown_config_field_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown SFTConfig field.*not_a_field"):
        baselines.train_sft(tiny_model_dir, ROWS, tmp_path / "sft", config={"not_a_field": 1})


def test_config_wrong_type_is_named(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="invalid SFTConfig field learning_rate='fast'; it must be a number"):
        baselines.train_sft(tiny_model_dir, ROWS, tmp_path / "sft", config={"learning_rate": "fast"})


def test_grpo_changes_weights(tiny_model_dir, tmp_path):
    before = _state(tiny_model_dir)
    config = {
        **COMMON,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 6,
        "temperature": 1.0,
        "gradient_checkpointing": False,
        "beta": 0.04,
    }
    result = baselines.train_grpo(tiny_model_dir, ROWS, tmp_path / "grpo", config=config)
    _assert_trained(result, before, "grpo")
    assert result.tokens_generated > 0
    rewards = [row["rewards/consistency/mean"] for row in result.log_history if "rewards/consistency/mean" in row]
    assert rewards, "GRPO logged no consistency reward"
    assert all(0.0 <= value <= 1.0 for value in rewards)
    spreads = [row["rewards/consistency/std"] for row in result.log_history if "rewards/consistency/std" in row]
    assert max(spreads) > 0, "every GRPO group had equal rewards, so only the KL term moved the weights"


PAIR_OPTIONS = {"max_new_tokens": 6, "batch_size": 16}


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_preference_baseline_changes_weights(method, tiny_model_dir, tmp_path):
    before = _state(tiny_model_dir)
    config = {**COMMON, "max_length": 64, "gradient_checkpointing": False}
    if method == "dpo":
        config["beta"] = 0.1
    train = baselines.train_dpo if method == "dpo" else baselines.train_orpo
    result = train(tiny_model_dir, ROWS * 2, tmp_path / method, config=config, pair_options=PAIR_OPTIONS)
    _assert_trained(result, before, method)

    stats = result.pair_stats
    assert stats["prompts"] == len(ROWS) * 2
    assert stats["pairs"] == result.num_train_examples
    assert stats["pairs"] + stats["dropped_all_clean"] + stats["dropped_all_confused"] == stats["prompts"]
    pairs = [json.loads(line) for line in (tmp_path / method / baselines.PAIRS_FILENAME).read_text().splitlines()]
    assert len(pairs) == stats["pairs"]


def test_preference_pairs_pick_clean_and_confused(tiny_model_dir):
    from tlpo.detection import detect

    tokenizer = baselines.load_tokenizer(tiny_model_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    pairs, stats = baselines.build_preference_pairs(model, tokenizer, ROWS, seed=3, **PAIR_OPTIONS)
    assert pairs, f"no pairs were built: {stats}"
    for pair in pairs:
        assert detect(pair["chosen"], pair["language"]).passed, pair
        assert not detect(pair["rejected"], pair["language"]).passed, pair
    again, _ = baselines.build_preference_pairs(model, tokenizer, ROWS, seed=3, **PAIR_OPTIONS)
    assert again == pairs, "the same seed built different pairs"


def _write_prompts(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_cli_baseline_sft_trains(tiny_model_dir, tmp_path, capsys):
    from tlpo.cli import main

    prompts = _write_prompts(tmp_path / "prompts.jsonl", ROWS)
    output_dir = tmp_path / "cli-sft"
    code = main(
        ["baseline", "sft", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--output-dir", str(output_dir),
         "--max-steps", "2", "--learning-rate", "0.01", "--per-device-train-batch-size", "2", "--max-length", "64"]
    )
    assert code == 0
    assert "sft: 2 logged steps on 4 examples" in capsys.readouterr().out
    assert (output_dir / "model.safetensors").is_file()
    assert (output_dir / "tokenizer.json").is_file()


def test_cli_baseline_lora_saves_adapter(tiny_model_dir, tmp_path):
    from tlpo.cli import main

    prompts = _write_prompts(tmp_path / "prompts.jsonl", ROWS)
    output_dir = tmp_path / "cli-lora"
    code = main(
        ["baseline", "sft", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--output-dir", str(output_dir),
         "--max-steps", "1", "--lora", "--lora-r", "4", "--max-length", "64"]
    )
    assert code == 0
    assert (output_dir / "adapter_config.json").is_file()
    assert not (output_dir / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("extra", "rows", "message"),
    [
        ([], ROWS + [{"prompt": "안녕", "language": "ko"}], "row 5 has no 'reference'"),
        (["--num-generations", "4"], ROWS, "--num-generations does not apply to sft"),
        ([], [{"prompt": "안녕", "language": "xx-not-a-language", "reference": "네"}], "xx-not-a-language"),
    ],
)
def test_cli_baseline_rejects_bad_input(tiny_model_dir, tmp_path, capsys, extra, rows, message):
    from tlpo.cli import main

    prompts = _write_prompts(tmp_path / "prompts.jsonl", rows)
    code = main(
        ["baseline", "sft", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--output-dir",
         str(tmp_path / "out"), "--max-steps", "1", *extra]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_baseline_missing_prompts_file(tiny_model_dir, tmp_path, capsys):
    from tlpo.cli import main

    missing = tmp_path / "missing.jsonl"
    code = main(["baseline", "grpo", "--model", str(tiny_model_dir), "--prompts", str(missing), "--output-dir", str(tmp_path)])
    assert code == 2
    assert f"prompts file not found: {missing}" in capsys.readouterr().err
