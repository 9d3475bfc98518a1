"""The TLPO loss: one prefix forward equals one full sequence per candidate, and hand checks."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tlpo.exploration import advantages
from tlpo.losses import candidate_logprobs, plain_candidate_logprobs, tlpo_loss

VOCAB = 96


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run these tiny models on one thread: on shared cores, two threads made them 5x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _tiny_llama(seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).float()


def _padded_batch(lengths, *, left: bool, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.zeros((len(lengths), width), dtype=torch.long)
    attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
    positions = torch.zeros(len(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens = torch.randint(1, VOCAB, (length,), generator=generator)
        if left:
            input_ids[row, width - length :] = tokens
            attention_mask[row, width - length :] = 1
            positions[row] = width - 1
        else:
            input_ids[row, :length] = tokens
            attention_mask[row, :length] = 1
            positions[row] = length - 1
    return input_ids, attention_mask, positions


def _distinct_candidates(batch_size, k, seed=2):
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(VOCAB, generator=generator)[:k] for _ in range(batch_size)])


def _loss_and_grads(policy, reference, logprob_fn, batch, candidates, logp_old, advantage, **kwargs):
    policy.zero_grad(set_to_none=True)
    input_ids, attention_mask, positions = batch
    logp = logprob_fn(policy, input_ids, attention_mask, positions, candidates, **kwargs)
    with torch.no_grad():
        logp_ref = logprob_fn(reference, input_ids, attention_mask, positions, candidates, **kwargs)
    loss, stats = tlpo_loss(logp, logp_old, logp_ref, advantage)
    loss.backward()
    grads = {name: parameter.grad.clone() for name, parameter in policy.named_parameters()}
    return logp.detach(), loss.detach(), stats, grads


@pytest.fixture(scope="module")
def models():
    return _tiny_llama(seed=0), _tiny_llama(seed=1)


@pytest.mark.parametrize(
    ("k", "left"), [(4, False), (16, False), (8, True)], ids=["k4_right_padded", "k16_right_padded", "k8_left_padded"]
)
def test_one_forward_matches_plain(models, k, left):
    policy, reference = models
    batch = _padded_batch([7, 19, 12, 3], left=left)
    candidates = _distinct_candidates(4, k)
    with torch.no_grad():
        exact = plain_candidate_logprobs(policy, *batch, candidates)
    # Old log-probs off by up to +-0.5 so that some ratios fall outside the clip range.
    generator = torch.Generator().manual_seed(3)
    logp_old = exact + (torch.rand(exact.shape, generator=generator) - 0.5)
    rewards = torch.where(torch.rand(exact.shape, generator=generator) < 0.5, 1.0, -1.0)
    advantage = advantages(exact.exp(), rewards)

    fast_logp, fast_loss, fast_stats, fast_grads = _loss_and_grads(
        policy, reference, candidate_logprobs, batch, candidates, logp_old, advantage
    )
    plain_logp, plain_loss, plain_stats, plain_grads = _loss_and_grads(
        policy,
        reference,
        plain_candidate_logprobs,
        batch,
        candidates,
        logp_old,
        advantage,
        pad_to=batch[0].shape[1] + 9,
    )

    assert fast_stats["clip_fraction"] > 0
    assert fast_stats["kl_mean"] > 0
    torch.testing.assert_close(fast_logp, plain_logp, rtol=0, atol=1e-5)
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-5, atol=1e-7)
    for name in fast_stats:
        torch.testing.assert_close(fast_stats[name], plain_stats[name], rtol=1e-5, atol=1e-6)
    for name, gradient in fast_grads.items():
        assert gradient.abs().sum() > 0, name
        torch.testing.assert_close(gradient, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_left_and_right_padding_agree(models):
    policy, _ = models
    candidates = _distinct_candidates(3, 8)
    with torch.no_grad():
        right = candidate_logprobs(policy, *_padded_batch([5, 11, 8], left=False), candidates)
        left = candidate_logprobs(policy, *_padded_batch([5, 11, 8], left=True), candidates)
    torch.testing.assert_close(right, left, rtol=0, atol=1e-5)


def test_logprobs_match_unbatched_forward(models):
    policy, _ = models
    input_ids, attention_mask, positions = _padded_batch([6, 13], left=False)
    candidates = _distinct_candidates(2, 5)
    with torch.no_grad():
        batched = candidate_logprobs(policy, input_ids, attention_mask, positions, candidates)
        for row in range(2):
            prefix = input_ids[row, : positions[row] + 1][None]
            single = torch.log_softmax(policy(prefix).logits[0, -1], dim=-1)[candidates[row]]
            torch.testing.assert_close(batched[row], single, rtol=0, atol=1e-5)


def test_micro_batches_sum_to_full_loss(models):
    policy, reference = models
    batch = _padded_batch([4, 9, 6], left=False)
    candidates = _distinct_candidates(3, 6)
    with torch.no_grad():
        logp_ref = candidate_logprobs(reference, *batch, candidates)
    logp = candidate_logprobs(policy, *batch, candidates)
    logp_old = logp.detach() + 0.1
    advantage = advantages(logp.detach().exp(), torch.tensor([[1.0, -1, 1, -1, 1, 1]] * 3))
    full, _ = tlpo_loss(logp, logp_old, logp_ref, advantage)
    parts = sum(
        tlpo_loss(logp[:, [k]], logp_old[:, [k]], logp_ref[:, [k]], advantage[:, [k]], num_items=logp.numel())[0]
        for k in range(6)
    )
    torch.testing.assert_close(parts, full, rtol=1e-6, atol=1e-7)


def test_loss_by_hand_with_clipping():
    # Four items: ratio e^0.5 with A > 0 and ratio e^-0.5 with A < 0 are clipped;
    # ratio 1 and ratio e^0.1 are not.
    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0]], requires_grad=True)
    logp_old = torch.tensor([[-1.5, -1.5, -0.5, -3.1]])
    logp_ref = torch.tensor([[-1.0, -1.0, -1.0, -2.0]])
    advantage = torch.tensor([[0.4, -0.3, 0.2, -0.1]])

    loss, stats = tlpo_loss(logp, logp_old, logp_ref, advantage, clip_epsilon=0.2, beta=0.1)

    ratios = [math.exp(0.5), math.exp(-0.5), 1.0, math.exp(0.1)]
    surrogates = [1.2 * 0.4, 0.8 * -0.3, 1.0 * 0.2, ratios[3] * -0.1]
    deltas = [0.0, 1.0, -0.5, 1.0]  # logp_ref - logp
    kls = [math.exp(d) - d - 1 for d in deltas]
    expected = -sum(s - 0.1 * kl for s, kl in zip(surrogates, kls)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)
    assert stats["ratio_mean"].item() == pytest.approx(sum(ratios) / 4, rel=1e-6)
    assert stats["kl_mean"].item() == pytest.approx(sum(kls) / 4, rel=1e-6)
    assert stats["advantage_min"].item() == pytest.approx(-0.3)
    assert stats["advantage_max"].item() == pytest.approx(0.4)

    loss.backward()
    # Clipped items get no surrogate gradient, only the KL term's:
    # d/dlogp [beta * kl] / 4 = beta * (1 - exp(delta)) / 4.
    assert logp.grad[0, 0].item() == pytest.approx(0.1 * (1 - math.exp(0.0)) / 4, abs=1e-7)
    assert logp.grad[0, 1].item() == pytest.approx(0.1 * (1 - math.exp(1.0)) / 4, rel=1e-6)
    assert logp.grad[0, 2].item() == pytest.approx((-0.2 + 0.1 * (1 - math.exp(-0.5))) / 4, rel=1e-6)


def test_kl_zero_when_reference_equals_policy():
    logp = torch.log_softmax(torch.randn(3, 5), dim=-1)
    loss, stats = tlpo_loss(logp, logp, logp, torch.zeros_like(logp), beta=0.04)
    assert stats["kl_mean"].item() == 0.0
    assert loss.item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)


def test_mask_excludes_padding_items():
    logp = torch.tensor([[-1.0, -2.0, float("-inf")]], requires_grad=True)
    logp_old = torch.tensor([[-1.0, -2.0, 0.0]])
    advantage = torch.tensor([[0.5, -0.5, 7.0]])
    mask = torch.tensor([[True, True, False]])
    loss, stats = tlpo_loss(logp, logp_old, logp_old, advantage, mask=mask)
    assert loss.item() == pytest.approx(-(0.5 - 0.5) / 2)
    assert stats["advantage_max"].item() == 0.5
    loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[0, 2].item() == 0.0
    assert logp.grad[0, 0].item() == pytest.approx(-0.25)


def test_empty_mask_gives_zero_loss():
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, stats = tlpo_loss(logp, logp, logp, torch.ones(2, 3), mask=torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert stats["clip_fraction"].item() == 0.0
    assert logp.grad.abs().sum().item() == 0.0


def test_plain_rejects_short_padding(models):
    policy, _ = models
    batch = _padded_batch([5, 9], left=False)
    with pytest.raises(ValueError, match="pad_to=6 is shorter"):
        plain_candidate_logprobs(policy, *batch, _distinct_candidates(2, 2), pad_to=6)
