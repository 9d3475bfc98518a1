"""The TLPO objective as pure functions of tensors.

TLPO (Choo et al., "TLPO: Token-Level Policy Optimization for Mitigating Language
Confusion in Large Language Models", ACL 2026, arXiv 2604.26553) trains only at the
update position `c - 1` of each confused response, over the K candidate tokens explored
there. Because all K candidates share one prefix and the loss reads one position, a
single forward pass of the prefix gives every candidate's log-probability at once
(`candidate_logprobs`). `plain_candidate_logprobs` runs one padded full sequence per
candidate instead. It gives the same values and gradients at K or more times the cost,
and exists for tests and the speed benchmark.

Shapes: B confusion points (update positions), K candidates per point, L sequence length,
V vocabulary size.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

__all__ = ["candidate_logprobs", "plain_candidate_logprobs", "tlpo_loss"]


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Positions count real tokens only, so left- and right-padded rows see the same
    # rotary positions as the unpadded sequence.
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _forward_parameters(model) -> set[str]:
    """Names of the keyword arguments the underlying `transformers` model's forward takes."""
    base = getattr(model, "module", model)  # DistributedDataParallel
    base = base.get_base_model() if hasattr(base, "get_base_model") else base  # PEFT
    return set(inspect.signature(base.forward).parameters)


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in _forward_parameters(model)


def _logits_at(model, input_ids, attention_mask, positions) -> torch.Tensor:
    """Run one forward pass and return the logits at `positions`, shape (B, V).

    When the model supports `logits_to_keep`, only the distinct requested positions go
    through the output projection, which avoids a (B, L, V) logits tensor.
    """
    batch_index = torch.arange(input_ids.shape[0], device=input_ids.device)
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": _position_ids(attention_mask)}
    if _accepts_logits_to_keep(model):
        distinct_positions, slot = torch.unique(positions, return_inverse=True)
        # (B, P, V) for the P distinct positions
        logits = model(**kwargs, logits_to_keep=distinct_positions, use_cache=False).logits
        return logits[batch_index, slot]
    logits = model(**kwargs, use_cache=False).logits  # (B, L, V)
    return logits[batch_index, positions]


def candidate_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    candidate_ids: torch.Tensor,
) -> torch.Tensor:
    """Compute the log-probabilities of K candidate tokens at one position per row.

    One forward pass of each prefix gives the next-token distribution at its update
    position, and all K candidates are read from it.

    Args:
        model: a causal LM (`transformers` or PEFT-wrapped) returning `.logits`.
        input_ids: (B, L) prefixes, left- or right-padded.
        attention_mask: (B, L), 1 for real tokens.
        positions: (B,) index into L of each row's update position, whose logits
            predict the next token.
        candidate_ids: (B, K) candidate token ids.

    Returns:
        (B, K) float32 log-probabilities `log softmax(logits[b, positions[b]])[candidate_ids[b]]`,
        differentiable with respect to the model's parameters.
    """
    logits = _logits_at(model, input_ids, attention_mask, positions)  # (B, V)
    logprobs = F.log_softmax(logits.float(), dim=-1)
    return logprobs.gather(-1, candidate_ids)  # (B, K)


def plain_candidate_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    positions: torch.Tensor,
    candidate_ids: torch.Tensor,
    *,
    pad_to: int | None = None,
    pad_token_id: int = 0,
) -> torch.Tensor:
    """Compute the same log-probabilities as `candidate_logprobs`, one sequence per candidate.

    This is the formulation of the authors' reference implementation. For candidate k,
    each row's real tokens up to its update position get candidate k appended, and the
    rows are right-padded to `pad_to` tokens. The batch runs through the model with full
    logits, and the candidate's log-probability is read at the update position. That is
    K forward passes of (B, pad_to) tokens where `candidate_logprobs` needs one of (B, L).

    Args:
        model, input_ids, attention_mask, positions, candidate_ids: as in
            `candidate_logprobs`; shapes (B, L), (B, L), (B,), (B, K).
        pad_to: length of every padded sequence; defaults to the longest
            prefix plus one. The reference pads to the maximum rollout length.
        pad_token_id: token id written into padding (masked out, so any valid id).

    Returns:
        (B, K) float32 log-probabilities, differentiable.
    """
    batch_size, num_candidates = candidate_ids.shape
    device = input_ids.device
    prefixes = [
        input_ids[row, : positions[row] + 1][attention_mask[row, : positions[row] + 1].bool()]
        for row in range(batch_size)
    ]
    lengths = [len(prefix) for prefix in prefixes]
    sequence_length = pad_to if pad_to is not None else max(lengths) + 1
    if sequence_length < max(lengths) + 1:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest prefix plus its candidate ({max(lengths) + 1})")

    read_at = torch.tensor([length - 1 for length in lengths], device=device)
    batch_index = torch.arange(batch_size, device=device)
    columns = []
    for k in range(num_candidates):
        sequences = torch.full((batch_size, sequence_length), pad_token_id, dtype=input_ids.dtype, device=device)
        mask = torch.zeros((batch_size, sequence_length), dtype=attention_mask.dtype, device=device)
        for row, prefix in enumerate(prefixes):
            sequences[row, : lengths[row]] = prefix
            sequences[row, lengths[row]] = candidate_ids[row, k]
            mask[row, : lengths[row] + 1] = 1
        logits = model(
            input_ids=sequences, attention_mask=mask, position_ids=_position_ids(mask), use_cache=False
        ).logits
        logprobs = F.log_softmax(logits.float(), dim=-1)  # (B, pad_to, V)
        columns.append(logprobs[batch_index, read_at, candidate_ids[:, k]])
    return torch.stack(columns, dim=1)  # (B, K)


def tlpo_loss(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    logp_ref: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_epsilon: float = 0.2,
    beta: float = 0.04,
    mask: torch.Tensor | None = None,
    num_items: int | float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute the clipped surrogate with a k3 KL penalty over (position, candidate) items.

    For each item with log-probability `logp` under the policy being trained,
    `logp_old` under the policy that sampled the rollout, `logp_ref` under the frozen
    reference, and advantage `A`:

        ratio = exp(logp - logp_old)
        surrogate = min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)
        kl = exp(logp_ref - logp) - (logp_ref - logp) - 1
        loss = -sum(mask * (surrogate - beta * kl)) / num_items

    The clip stops the update from moving a candidate's probability by more than
    `eps` relative to the sampling policy in the direction its advantage pushes, and the
    k3 estimator is a non-negative, unbiased estimate of KL(policy || reference).

    Args:
        logp: (B, K) policy log-probabilities, with gradient.
        logp_old: (B, K) sampling-policy log-probabilities; treated as constants.
        logp_ref: (B, K) reference log-probabilities; treated as constants.
        advantages: (B, K), from `tlpo.exploration.advantages`.
        clip_epsilon: eps above.
        beta: weight of the KL penalty.
        mask: optional (B, K) bool, False for padding items that must not count.
        num_items: divisor of the summed objective; defaults to the number of valid
            items here. Pass the item count of the whole optimizer step when one step is
            split into micro-batches or processes, so that the sum of the parts' losses
            equals the loss of the whole batch.

    Returns:
        `(loss, stats)`: the scalar loss, and detached 0-dim tensors over the valid items:
        `advantage_mean`, `advantage_min`, `advantage_max`, `kl_mean`, `clip_fraction`
        (share of items whose clipped term was the smaller one), `ratio_mean`.
    """
    logp_old = logp_old.detach()
    logp_ref = logp_ref.detach()
    advantages = advantages.detach().to(logp.dtype)
    if mask is None:
        mask = torch.ones_like(logp, dtype=torch.bool)
    mask = mask.bool()
    # Padding items may hold any value, even -inf. Replacing them before any arithmetic
    # keeps NaN out of both the loss and its gradient.
    logp = torch.where(mask, logp, torch.zeros_like(logp))
    logp_old = torch.where(mask, logp_old, torch.zeros_like(logp_old))
    logp_ref = torch.where(mask, logp_ref, torch.zeros_like(logp_ref))
    advantages = torch.where(mask, advantages, torch.zeros_like(advantages))

    ratio = torch.exp(logp - logp_old)
    clipped_ratio = ratio.clamp(1.0 - clip_epsilon, 1.0 + clip_epsilon)
    unclipped_term = ratio * advantages
    clipped_term = clipped_ratio * advantages
    surrogate = torch.minimum(unclipped_term, clipped_term)

    log_ratio_ref = logp_ref - logp
    kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1.0

    weights = mask.to(logp.dtype)
    count = weights.sum()
    divisor = num_items if num_items is not None else count.clamp(min=1.0)
    per_item = torch.where(mask, surrogate - beta * kl, torch.zeros_like(logp))
    loss = -per_item.sum() / divisor

    with torch.no_grad():
        safe_count = count.clamp(min=1.0)
        valid_advantages = advantages[mask]
        empty = valid_advantages.numel() == 0
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        stats = {
            "advantage_mean": zero if empty else valid_advantages.mean(),
            "advantage_min": zero if empty else valid_advantages.min(),
            "advantage_max": zero if empty else valid_advantages.max(),
            "kl_mean": torch.where(mask, kl, 0.0).sum() / safe_count,
            "clip_fraction": (mask & (clipped_term < unclipped_term)).sum().to(logp.dtype) / safe_count,
            "ratio_mean": torch.where(mask, ratio, 0.0).sum() / safe_count,
        }
    return loss, {name: value.detach() for name, value in stats.items()}
