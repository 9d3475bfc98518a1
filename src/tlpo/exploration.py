"""Candidate exploration at a confusion point: top-K tokens, greedy extension, rewards.

For a sampled response whose first wrong-language character lies in token `c`, the
policy's next-token distribution at the update position `c - 1` (softmax of the raw
logits, no temperature) gives the K most probable tokens. Each candidate is appended to
the prefix and extended greedily by a few tokens. The candidate earns reward +1 when
that continuation contains no confusion, and -1 otherwise. `advantages` turns the
rewards into the probability-weighted, normalised advantages of the TLPO objective.

Cost per batch of N confusion points: one forward pass of the N left-padded prefixes
gives the top-K distributions. Then `extension_tokens` single-token steps run N * K rows
on the prefixes' key/value cache, and the detector runs once per candidate.

How a candidate is judged: the detector runs on the candidate and its extension decoded
together with the response before them, from the start of the line that contains the
confusion point, as one id sequence. The candidate fails when a wrong-language span
ends after the first character the candidate owns. Judging the new text in context,
rather than alone, matters in three cases. A byte-level token may complete a character
whose leading bytes are in the prefix. A word may start in the prefix and end in the
candidate ("al" + "one"). Word-level language ID labels a word from its whole line.
Spans that end at or before the candidate's first character are ignored, because they
belong to text the candidate did not write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tlpo.alignment import char_to_token, decode_with_spans
from tlpo.losses import _accepts_logits_to_keep, _forward_parameters

__all__ = ["ExplorationResult", "advantages", "explore_batch", "explore_candidates"]


@dataclass
class ExplorationResult:
    """The K explored candidates of one confusion point, most probable first."""

    update_position: int  # absolute index into the context of the logits that chose the confusion token
    candidate_ids: torch.Tensor  # (K,) long
    probs: torch.Tensor  # (K,) float32, softmax of the raw logits at the update position
    logprobs: torch.Tensor  # (K,) float32, log of `probs`: the sampling policy's log-probabilities
    rewards: torch.Tensor  # (K,) float32, +1 for a continuation without confusion, else -1
    advantages: torch.Tensor  # (K,) float32, `advantages(probs, rewards)`
    continuations: list[str]  # decoded text of each candidate plus its greedy extension


def advantages(probs: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Compute TLPO advantages with a probability-weighted baseline.

    `mu = sum(p * r) / sum(p)`, `w = p * (r - mu)`, `A = w / sum(|w|)`; all zero when
    every reward in a group is equal. Because `sum(w) = 0`, positive and negative
    advantages each sum to 1/2 in absolute value.

    Args:
        probs: (..., K) candidate probabilities (need not sum to 1).
        rewards: (..., K) rewards, same shape.

    Returns:
        (..., K) float32 advantages; groups are the last dimension.
    """
    probs = probs.float()
    rewards = rewards.float()
    tiny = torch.finfo(torch.float32).tiny
    baseline = (probs * rewards).sum(-1, keepdim=True) / probs.sum(-1, keepdim=True).clamp(min=tiny)
    weighted = probs * (rewards - baseline)
    norm = weighted.abs().sum(-1, keepdim=True)
    all_equal = (rewards == rewards[..., :1]).all(-1, keepdim=True)
    result = weighted / norm.clamp(min=tiny)
    return torch.where(all_equal | (norm == 0), torch.zeros_like(result), result)


def _stop_token_ids(model, tokenizer) -> set[int]:
    """End-of-sequence ids of the model's generation config and of the tokenizer.

    Chat models often stop on a turn-end token that only the generation config lists.
    """
    ids: set[int] = set()
    base = getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module
    for source in (getattr(base, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if eos is None:
            continue
        ids.update([eos] if isinstance(eos, int) else eos)
    return ids


def _left_pad(sequences: Sequence[torch.Tensor], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        input_ids[row, length - len(sequence) :] = sequence
        attention_mask[row, length - len(sequence) :] = 1
    return input_ids, attention_mask


@torch.no_grad()
def _top_k_and_extend(model, prefixes, *, k, extension_tokens, pad_id, stop_ids):
    """Return top-K (ids, probs, logprobs), each (N, K), and the (N, K, 1 + extension) new tokens.

    Tokens after a stop token are replaced with -1.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask = _left_pad(prefixes, pad_id, device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    output = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True, **extra
    )
    logprobs_all = torch.log_softmax(output.logits[:, -1].float(), dim=-1)  # (N, V)
    if k > logprobs_all.shape[-1]:
        raise ValueError(f"k={k} exceeds the vocabulary size {logprobs_all.shape[-1]}; pass a smaller k")
    top_logprobs, top_ids = logprobs_all.topk(k, dim=-1)  # (N, K), sorted descending
    num_points = len(prefixes)

    # Greedy extension of all N * K candidates at once on the repeated prefix cache.
    # transformers 5.25 renamed the cache argument and output field from
    # `past_key_values` to `cache`; support both spellings.
    cache_argument = "cache" if "cache" in _forward_parameters(model) else "past_key_values"
    cache = output[cache_argument]
    cache.batch_repeat_interleave(k)
    mask = attention_mask.repeat_interleave(k, dim=0)
    next_position = position_ids[:, -1:].repeat_interleave(k, dim=0) + 1
    current = top_ids.reshape(-1, 1)
    new_tokens = [current]
    finished = torch.zeros(num_points * k, dtype=torch.bool, device=device)
    stop_tensor = torch.tensor(sorted(stop_ids), device=device, dtype=torch.long)
    for _ in range(extension_tokens):
        finished |= torch.isin(current[:, 0], stop_tensor)
        if bool(finished.all()):
            new_tokens.append(torch.full_like(current, -1))
            continue
        mask = torch.cat([mask, torch.ones_like(current)], dim=1)
        step = model(
            input_ids=current.clamp(min=0),
            attention_mask=mask,
            position_ids=next_position,
            use_cache=True,
            **{cache_argument: cache},
        )
        cache = step[cache_argument]
        current = step.logits[:, -1].argmax(-1, keepdim=True)
        current = torch.where(finished[:, None], torch.full_like(current, -1), current)
        new_tokens.append(current)
        next_position = next_position + 1
    generated = torch.cat(new_tokens, dim=1).reshape(num_points, k, 1 + extension_tokens)
    return top_ids, top_logprobs.exp(), top_logprobs, generated


def explore_batch(
    model,
    tokenizer,
    contexts: Sequence[torch.Tensor],
    response_starts: Sequence[int],
    confusion_tokens: Sequence[int],
    languages: Sequence[str],
    *,
    k: int = 16,
    extension_tokens: int = 3,
    detector_options: dict | None = None,
    batch_size: int = 8,
) -> list[ExplorationResult]:
    """Explore K candidates at each of N confusion points, batching the model calls.

    Args:
        model: the current policy, a `transformers` causal LM (PEFT-wrapped is fine).
        tokenizer: its fast tokenizer.
        contexts: N 1-D tensors, each a full sampled sequence (prompt and response ids,
            including chat-template special tokens).
        response_starts: index of each response's first generated token in its context.
        confusion_tokens: absolute index of the token containing the first
            wrong-language character; the update position is one before it.
        languages: target language code of each point.
        k: candidates per point (at most the vocabulary size).
        extension_tokens: greedy tokens appended after each candidate before judging.
        detector_options: keyword arguments for `tlpo.detection.detect_batch`
            (`method`, `ignore_english`).
        batch_size: confusion points per forward pass; the extension runs
            `batch_size * k` rows on a cache of `batch_size * k` prefixes.

    Returns:
        One `ExplorationResult` per point, in input order.

    A candidate that is an end-of-sequence token ends the response: it gets no
    extension, its continuation is empty, and it earns +1.

    The model runs in eval mode (no dropout) under `torch.no_grad`, and its previous
    mode is restored afterwards.
    """
    from tlpo.detection import detect_batch

    count = len(contexts)
    if not count == len(response_starts) == len(confusion_tokens) == len(languages):
        raise ValueError(
            f"got {count} contexts, {len(response_starts)} response starts, {len(confusion_tokens)} "
            f"confusion tokens and {len(languages)} languages; pass one of each per confusion point"
        )
    for context, start, confusion in zip(contexts, response_starts, confusion_tokens):
        if not 0 < start <= confusion < len(context):
            raise ValueError(
                f"confusion token {confusion} must lie in the response, which spans "
                f"[{start}, {len(context)}) of its context"
            )
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    detector_options = dict(detector_options or {})
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stop_ids = _stop_token_ids(model, tokenizer)

    was_training = model.training
    model.eval()
    try:
        results: list[ExplorationResult] = []
        for first in range(0, count, batch_size):
            chunk = range(first, min(first + batch_size, count))
            prefixes = [torch.as_tensor(contexts[i])[: confusion_tokens[i]].long() for i in chunk]
            top_ids, top_probs, top_logprobs, generated = _top_k_and_extend(
                model, prefixes, k=k, extension_tokens=extension_tokens, pad_id=pad_id, stop_ids=stop_ids
            )

            texts, boundaries = [], []
            for row, index in enumerate(chunk):
                response_prefix = torch.as_tensor(contexts[index])[response_starts[index] : confusion_tokens[index]]
                point_texts, point_boundaries = _candidate_texts(tokenizer, response_prefix.tolist(), generated[row])
                texts.extend(point_texts)
                boundaries.extend(point_boundaries)
            point_languages = [languages[index] for index in chunk for _ in range(k)]
            reports = detect_batch(texts, point_languages, **detector_options)
            # A candidate fails when a wrong-language span reaches past its first character.
            rewards = torch.tensor(
                [-1.0 if any(span.end > boundary for span in report.spans) else 1.0
                 for report, boundary in zip(reports, boundaries)]
            ).reshape(len(chunk), k)

            for row, index in enumerate(chunk):
                point = slice(row * k, (row + 1) * k)
                probs = top_probs[row].cpu()
                results.append(
                    ExplorationResult(
                        update_position=confusion_tokens[index] - 1,
                        candidate_ids=top_ids[row].cpu(),
                        probs=probs,
                        logprobs=top_logprobs[row].cpu(),
                        rewards=rewards[row],
                        advantages=advantages(probs, rewards[row]),
                        continuations=[text[boundary:] for text, boundary in zip(texts[point], boundaries[point])],
                    )
                )
        return results
    finally:
        model.train(was_training)


def _candidate_texts(tokenizer, response_prefix: list[int], generated: torch.Tensor) -> tuple[list[str], list[int]]:
    """Decode the text to judge for each candidate of one point, and where the candidate starts in it.

    `generated` is (K, 1 + extension) with -1 after a stop token. The text starts at the
    line of the response that contains the confusion point. The detector decides each
    line from that line alone, because script-rule phrases and word-level language ID
    both stop at line breaks. So earlier lines cannot change the spans after the
    boundary, and skipping them keeps the cost per candidate independent of the
    response length.
    """
    prefix_text, prefix_spans = decode_with_spans(tokenizer, response_prefix)
    last_newline = prefix_text.rfind("\n")
    window_start = char_to_token(prefix_spans, last_newline) if last_newline >= 0 else 0
    window = response_prefix[window_start:]

    texts, boundaries = [], []
    for row in generated.tolist():
        new_ids = [token for token in row if token >= 0]
        text, spans = decode_with_spans(tokenizer, window + new_ids)
        texts.append(text)
        boundaries.append(spans[len(window)][0])
    return texts, boundaries


def explore_candidates(
    model,
    tokenizer,
    context_ids: torch.Tensor,
    response_start: int,
    confusion_token: int,
    language: str,
    *,
    k: int = 16,
    extension_tokens: int = 3,
    detector_options: dict | None = None,
) -> ExplorationResult:
    """Explore K candidates at one confusion point; see `explore_batch` for the arguments."""
    return explore_batch(
        model,
        tokenizer,
        [context_ids],
        [response_start],
        [confusion_token],
        [language],
        k=k,
        extension_tokens=extension_tokens,
        detector_options=detector_options,
    )[0]
