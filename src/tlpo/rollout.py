"""Rollouts: batched sampling that keeps the exact token ids the policy produced.

`sample_responses` runs `model.generate` on left-padded prompt ids and returns, for each
sequence, the generated ids up to and including the end-of-sequence token. The prompt
ids are the caller's (chat template included), so prompt ids + response ids is exactly
the sequence the policy saw and produced, special tokens and all: the trainer never
decodes and re-tokenizes it.

Sampling is seeded per sequence. Each sequence draws its Gumbel noise from its own
`torch.Generator`, so a response depends on its seed and the weights, not on which other
sequences share its batch or process. That is what lets two processes reproduce a
one-process run and a resumed run reproduce an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList


def sequence_seed(*parts: int | str) -> int:
    """Return a 63-bit seed derived from `parts` (for example seed, step, prompt index, sample index)."""
    digest = hashlib.blake2b(":".join(str(part) for part in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededGumbelSampler(LogitsProcessor):
    """Turn greedy decoding into temperature sampling with one random stream per row.

    Adding Gumbel(0, 1) noise to `logits / temperature` and taking the argmax draws a
    token from `softmax(logits / temperature)` (the Gumbel-max trick). Row `i` draws its
    noise from a generator seeded with `seeds[i]`, one vector of vocabulary size per
    step, so its tokens do not depend on the other rows.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, device: torch.device):
        self.temperature = temperature
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.temperature == 0:
            return scores
        scores = scores.float() / self.temperature
        vocab_size = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(vocab_size, generator=generator, device=scores.device) for generator in self.generators]
        )
        # Clamp away from 0 so that -log(-log(u)) stays finite.
        uniform = uniform.clamp_(min=torch.finfo(uniform.dtype).tiny, max=1.0 - 1e-7)
        return scores - torch.log(-torch.log(uniform))


def end_of_sequence_ids(model, tokenizer) -> list[int]:
    """Return the token ids that end a response: the model's generation config, else the tokenizer's EOS."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            "neither the model's generation config nor the tokenizer defines an end-of-sequence token; "
            "set tokenizer.eos_token or model.generation_config.eos_token_id"
        )
    return [int(token) for token in (eos if isinstance(eos, (list, tuple)) else [eos])]


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    seeds: Sequence[int],
    *,
    temperature: float,
    max_new_tokens: int,
    batch_size: int = 64,
    progress=None,
) -> list[list[int]]:
    """Sample one response per prompt and return its token ids.

    Args:
        prompt_ids: token ids of each prompt, chat template applied; repeat a prompt to
            sample it several times.
        seeds: one seed per prompt (see `sequence_seed`).
        temperature: 0 decodes greedily.
        batch_size: maximum number of sequences per `generate` call.
        progress: optional tqdm bar, advanced by the number of sequences finished.

    Returns:
        For each prompt, the generated ids up to and including the first end-of-sequence
        token (none if `max_new_tokens` ran out first), without padding.
    """
    if len(prompt_ids) != len(seeds):
        raise ValueError(f"got {len(prompt_ids)} prompts but {len(seeds)} seeds")
    eos_ids = end_of_sequence_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    device = next(model.parameters()).device
    # generate() fills every value left None from the model's own generation config.
    # The values below are transformers' neutral defaults: they keep repetition penalties
    # out, and sampling settings that greedy decoding ignores (and warns about) unset.
    generation_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        encoder_repetition_penalty=1.0,
        temperature=1.0,
        top_k=50,
        top_p=1.0,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )

    was_training = model.training
    model.eval()
    responses: list[list[int]] = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            batch = [list(ids) for ids in prompt_ids[start : start + batch_size]]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
            sampler = SeededGumbelSampler(seeds[start : start + batch_size], temperature, device)
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=generation_config,
                logits_processor=LogitsProcessorList([sampler]),
            )
            for row in output[:, width:].tolist():
                response = []
                for token in row:
                    response.append(token)
                    if token in eos_ids:
                        break
                responses.append(response)
            if progress is not None:
                progress.update(len(batch))
    finally:
        model.train(was_training)
    return responses
