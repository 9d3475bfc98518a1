"""Advantages and candidate exploration on a real tokenizer and a tiny random Llama."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tlpo.detection import detect
from tlpo.exploration import advantages, explore_batch, explore_candidates

CORPUS = [
    "안녕하세요 오늘 날씨가 정말 좋네요. 공원에 산책하러 갈까요?",
    "你好，今天天气很好。我们去公园散步吧。",
    "こんにちは、今日はいい天気ですね。",
    "Hello, the weather is nice today. Shall we go for a walk?",
    "Привет, сегодня хорошая погода.",
] * 20


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run these tiny models on one thread: on shared cores, two threads made them 5x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer():
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<eos>", "<user>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


def _context(tokenizer, prompt, response):
    prompt_ids = [tokenizer.convert_tokens_to_ids("<user>"), *tokenizer(prompt)["input_ids"]]
    response_ids = tokenizer(response)["input_ids"]
    return torch.tensor(prompt_ids + response_ids), len(prompt_ids)


def test_advantages_by_hand():
    probs = torch.tensor([0.5, 0.3, 0.2])
    rewards = torch.tensor([1.0, -1.0, 1.0])
    # mu = 0.4; w = [0.3, -0.42, 0.12]; sum |w| = 0.84.
    expected = torch.tensor([0.3, -0.42, 0.12]) / 0.84
    torch.testing.assert_close(advantages(probs, rewards), expected)


def test_advantages_zero_when_rewards_equal():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.1]])
    for value in (1.0, -1.0):
        result = advantages(probs, torch.full((2, 3), value))
        assert torch.equal(result, torch.zeros(2, 3))


def test_advantages_sum_properties():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(5, 16, generator=generator), dim=-1)
    rewards = torch.where(torch.rand(5, 16, generator=generator) < 0.3, 1.0, -1.0)
    rewards[:, 0] = 1.0
    rewards[:, 1] = -1.0  # every group has both rewards
    result = advantages(probs, rewards)
    torch.testing.assert_close(result.sum(-1), torch.zeros(5), rtol=0, atol=1e-6)
    torch.testing.assert_close(result.abs().sum(-1), torch.ones(5), rtol=0, atol=1e-6)
    assert (result[rewards > 0] > 0).all()
    assert (result[rewards < 0] < 0).all()
    # Groups are independent: row 2 alone gives the same advantages.
    torch.testing.assert_close(advantages(probs[2], rewards[2]), result[2])


def test_exploration_candidates_and_rewards(model, tokenizer):
    # Two lines, so the test also covers judging from the start of the confusion point's line.
    context, response_start = _context(tokenizer, "날씨 어때요?", "안녕하세요.\n오늘 날씨가 정말 좋네요. 你好")
    confusion_token = len(context) - 2
    result = explore_candidates(
        model, tokenizer, context, response_start, confusion_token, "ko", k=16, extension_tokens=3, detector_options={}
    )

    assert result.update_position == confusion_token - 1
    assert result.candidate_ids.shape == (16,)
    assert len(set(result.candidate_ids.tolist())) == 16
    assert (result.probs[:-1] >= result.probs[1:]).all()

    with torch.no_grad():
        logits = model(context[None, :confusion_token]).logits[0, -1]
    full = torch.softmax(logits, dim=-1)
    torch.testing.assert_close(result.probs, full[result.candidate_ids], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(result.probs, full.topk(16).values, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(result.logprobs, result.probs.log(), rtol=1e-5, atol=1e-6)

    response_prefix = context[response_start:confusion_token].tolist()
    boundary = len(tokenizer.decode(response_prefix))
    expected_rewards = []
    for candidate, continuation in zip(result.candidate_ids.tolist(), result.continuations):
        greedy = model.generate(
            torch.tensor([context[:confusion_token].tolist() + [candidate]]),
            max_new_tokens=3,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, confusion_token:].tolist()
        text = tokenizer.decode(response_prefix + greedy, skip_special_tokens=True)
        assert continuation == text[boundary:]
        report = detect(text, "ko")
        expected_rewards.append(-1.0 if any(span.end > boundary for span in report.spans) else 1.0)
    assert result.rewards.tolist() == expected_rewards
    # The fixed seed gives both outcomes, so the check above is not vacuous.
    assert set(expected_rewards) == {1.0, -1.0}
    torch.testing.assert_close(result.advantages, advantages(result.probs, result.rewards))


def test_batch_matches_single_points(model, tokenizer):
    points = [
        (*_context(tokenizer, "날씨 어때요?", "안녕하세요 오늘 你好"), "ko"),
        (*_context(tokenizer, "天气怎么样？", "今天天气很好。こんにちは"), "zh"),
        (*_context(tokenizer, "How is it?", "The weather is nice today, Привет"), "en"),
    ]
    confusions = [len(context) - 1 for context, _, _ in points]
    batched = explore_batch(
        model,
        tokenizer,
        [context for context, _, _ in points],
        [start for _, start, _ in points],
        confusions,
        [language for _, _, language in points],
        k=8,
        batch_size=2,
    )
    for (context, start, language), confusion, result in zip(points, confusions, batched):
        single = explore_candidates(model, tokenizer, context, start, confusion, language, k=8, extension_tokens=3)
        assert torch.equal(single.candidate_ids, result.candidate_ids)
        assert single.continuations == result.continuations
        assert torch.equal(single.rewards, result.rewards)
        torch.testing.assert_close(single.probs, result.probs, rtol=1e-5, atol=1e-7)


def test_eos_candidate_ends_response(model, tokenizer):
    # With K equal to the vocabulary size, the end-of-sequence token is a candidate.
    context, start = _context(tokenizer, "날씨 어때요?", "안녕하세요 你好")
    result = explore_candidates(model, tokenizer, context, start, len(context) - 1, "ko", k=len(tokenizer))
    eos_index = result.candidate_ids.tolist().index(tokenizer.eos_token_id)
    assert result.continuations[eos_index] == ""
    assert result.rewards[eos_index].item() == 1.0
    assert sorted(result.candidate_ids.tolist()) == list(range(len(tokenizer)))


def test_candidate_completing_split_character(model, tokenizer):
    # "鼇" is not in the vocabulary, so its UTF-8 bytes span several tokens. With the
    # confusion point at the last of them, the candidate equal to that token completes
    # the character from bytes in the prefix, owns it, and is judged by it.
    context, start = _context(tokenizer, "날씨 어때요?", "안녕 鼇")
    completing_token = context[-1].item()
    assert "鼇" not in tokenizer.decode(context[start:-1])
    result = explore_candidates(model, tokenizer, context, start, len(context) - 1, "ko", k=len(tokenizer))
    index = result.candidate_ids.tolist().index(completing_token)
    assert result.continuations[index].startswith("鼇")
    assert result.rewards[index].item() == -1.0


def test_exploration_restores_training_mode(model, tokenizer):
    context, start = _context(tokenizer, "hi", "안녕하세요 你好")
    model.train()
    try:
        explore_candidates(model, tokenizer, context, start, len(context) - 1, "ko", k=2, extension_tokens=1)
        assert model.training
    finally:
        model.eval()


def test_exploration_rejects_bad_points(model, tokenizer):
    context, start = _context(tokenizer, "hi", "안녕하세요")
    with pytest.raises(ValueError, match="must lie in the response"):
        explore_candidates(model, tokenizer, context, start, start - 1, "ko", k=2, extension_tokens=1)
    with pytest.raises(ValueError, match="exceeds the vocabulary size"):
        explore_candidates(model, tokenizer, context, start, start, "ko", k=10_000, extension_tokens=1)
