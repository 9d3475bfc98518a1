"""A tiny chat model and prompts for the trainer tests, plus tests of the rollout sampler.

`build_tiny_model` trains a byte-level BPE tokenizer on a few multilingual lines, so
Hangul, kana and Han characters are split over several byte tokens. It builds a random
2-layer Llama in about a second and saves both, so every test and every `accelerate
launch` process loads the same weights from disk.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

CORPUS = [
    "Translate into Korean: good morning. 좋은 아침입니다. 감사합니다, 안녕히 가세요.",
    "日本語で答えてください。こんにちは、ありがとうございます。東京は大きい都市です。",
    "用中文回答。你好，谢谢。北京是一个大城市。",
    "Bonjour, merci beaucoup. La ville est grande et belle.",
    "Hello, thank you. The city is big and beautiful. Reply in English please.",
    "Привет, спасибо. Город большой и красивый.",
]

PROMPTS = [
    {"prompt": "Say good morning in Korean.", "language": "ko"},
    {"prompt": [{"role": "user", "content": "日本語で挨拶してください。"}], "language": "ja"},
    {"prompt": "Say thank you.", "language": "ko-KR"},
    {"prompt": "用中文说你好。", "language": "zh"},
    {"prompt": "Describe Tokyo.", "language": "Japanese"},
    {"prompt": "Describe Seoul.", "language": "kor"},
    {"prompt": "Describe Beijing.", "language": "zh"},
    {"prompt": "Say goodbye.", "language": "ko"},
]


def build_tiny_model(folder: str | Path, *, seed: int = 0) -> Path:
    """Save a random 2-layer Llama and its chat tokenizer into `folder` and return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=420,
            special_tokens=["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>", pad_token="<|pad|>")
    tokenizer.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # A wide initialisation gives peaked, varied next-token distributions, so that
        # sampled responses differ and candidates get both rewards.
        initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_tiny_model(folder: str | Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer


def encode(tokenizer, rows) -> list[list[int]]:
    """Return the chat-template token ids of prompt rows."""
    from tlpo.data import encode_prompts, validate_rows

    return encode_prompts(tokenizer, validate_rows(rows), max_new_tokens=0, max_length=None)


def write_prompts(path: str | Path, rows=PROMPTS) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def tiny_config(output_dir: str | Path, **overrides):
    """A TLPOConfig small enough for a CPU test: short responses, K=4, a large learning rate."""
    from tlpo.config import TLPOConfig

    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        num_generations=4,
        max_new_tokens=12,
        num_candidates=4,
        extension_tokens=2,
        items_per_step=64,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        lr_scheduler_kwargs={},
        warmup_steps=0,
        ignore_english=False,
        detector_method="script",
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=7,
        disable_tqdm=True,
    )
    values.update(overrides)
    return TLPOConfig(**values)


# ---------------------------------------------------------------- tests of tlpo.rollout


def test_seeded_sampling_ignores_batch(tmp_path):
    from tlpo.rollout import sample_responses

    model, tokenizer = load_tiny_model(build_tiny_model(tmp_path / "model"))
    prompts = encode(tokenizer, PROMPTS[:4])
    seeds = [11, 12, 13, 14]

    together = sample_responses(model, tokenizer, prompts, seeds, temperature=1.0, max_new_tokens=10, batch_size=4)
    one_by_one = sample_responses(model, tokenizer, prompts, seeds, temperature=1.0, max_new_tokens=10, batch_size=1)
    reversed_order = sample_responses(
        model, tokenizer, prompts[::-1], seeds[::-1], temperature=1.0, max_new_tokens=10, batch_size=4
    )

    assert together == one_by_one
    assert together == reversed_order[::-1]
    assert len(set(map(tuple, together))) > 1


def test_seeded_sampling_depends_on_seed(tmp_path):
    from tlpo.rollout import sample_responses

    model, tokenizer = load_tiny_model(build_tiny_model(tmp_path / "model"))
    prompt = encode(tokenizer, PROMPTS[:1])[0]
    responses = sample_responses(
        model, tokenizer, [prompt] * 6, list(range(6)), temperature=1.0, max_new_tokens=10
    )

    assert len(set(map(tuple, responses))) >= 3


def test_sampling_matches_softmax_frequencies(tmp_path):
    """The Gumbel-max sampler draws tokens with the softmax(logits / T) frequencies."""
    from tlpo.rollout import SeededGumbelSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    temperature = 0.6
    counts = torch.zeros(4)
    for seed in range(4000):
        sampler = SeededGumbelSampler([seed], temperature, torch.device("cpu"))
        counts[int(sampler(None, logits.clone()).argmax())] += 1
    expected = torch.softmax(logits[0] / temperature, dim=-1)

    # 4000 draws: the standard error of each frequency is at most 0.008.
    assert torch.allclose(counts / counts.sum(), expected, atol=0.03)


if __name__ == "__main__":
    build_tiny_model(sys.argv[1])
