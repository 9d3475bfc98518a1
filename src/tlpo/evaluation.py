"""Before/after measurements for any Hugging Face causal LM with a chat template.

- `sample_responses`: batched `generate` over chat-formatted prompts.
- `evaluate_consistency`: how often responses stay in the requested language (RPR, LPR,
  WPR by `tlpo.detection`), overall and per language.
- `evaluate_capability`: chrF and exact match against references, to show whether
  fine-tuning damaged what the model could do.

Rows are dicts with `prompt` (a user message string, or a list of chat messages),
`language`, and for capability `reference`, as in the organism's JSONL files.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_BATCH_SIZE = 64


def _messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return prompt
    raise ValueError(
        f"invalid prompt {prompt!r:.80}: expected a user message string or a list of "
        "{'role': ..., 'content': ...} messages"
    )


def sample_responses(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    num_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    progress: bool = True,
) -> list[list[str]]:
    """Generate `num_samples` responses for each prompt, through the tokenizer's chat template.

    Temperature 0 decodes greedily (and then all samples of a prompt are equal); above 0
    it samples from the full softmax at that temperature, with no top-k or top-p cut.
    Prompts are left-padded into batches of `batch_size` prompts. The results are
    deterministic for a given seed and batch size; the global torch random state is left
    as it was. Returns one list of decoded responses (special tokens removed) per prompt.
    """
    import torch
    from tqdm.auto import tqdm

    if temperature < 0:
        raise ValueError(f"invalid temperature {temperature}; use 0 for greedy decoding or a positive value")
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples ({num_samples}) and batch_size ({batch_size}) must be at least 1")
    if tokenizer.chat_template is None:
        raise ValueError("the tokenizer has no chat template; evaluation formats prompts as chat conversations")

    texts = [
        tokenizer.apply_chat_template(_messages(prompt), tokenize=False, add_generation_prompt=True)
        for prompt in prompts
    ]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    greedy = temperature == 0
    if greedy:
        sampling = {"do_sample": False}
    else:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    # Greedy samples of one prompt are identical, so generate one and copy it.
    copies = 1 if greedy else num_samples
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    responses: list[list[str]] = []
    try:
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            batches = range(0, len(texts), batch_size)
            for start in tqdm(batches, desc="generating", unit="batch", disable=not progress):
                batch = texts[start : start + batch_size]
                # The chat template already contains any special tokens the model needs.
                encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                with torch.no_grad():
                    output = model.generate(
                        **encoded,
                        max_new_tokens=max_new_tokens,
                        num_return_sequences=copies,
                        pad_token_id=pad_id,
                        **sampling,
                    )
                new_tokens = output[:, encoded["input_ids"].shape[1] :]
                decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for index in range(len(batch)):
                    group = decoded[index * copies : (index + 1) * copies]
                    responses.append(group * num_samples if greedy else group)
    finally:
        tokenizer.padding_side = previous_side
        model.train(was_training)
    return responses


def evaluate_consistency(
    model,
    tokenizer,
    rows: Sequence[dict],
    *,
    temperature: float = 0.0,
    num_samples: int = 1,
    detector_options: dict | None = None,
    **generation,
) -> dict:
    """Sample responses to `rows` and measure how often they stay in each row's `language`.

    Returns {"rpr", "lpr", "wpr", "responses", "per_language": {code: {...}},
    "temperature", "num_samples"}, rates in percent as `tlpo.detection.pass_rates`
    gives them (LPR and WPR are None when no line or word counts). `detector_options` go
    to `tlpo.detection.detect_batch` (default: method "auto", ignore_english True).
    `generation` goes to `sample_responses` (max_new_tokens, batch_size, seed, progress).
    """
    from tlpo.detection import detect_batch, pass_rates

    _require_fields(rows, ("prompt", "language"))
    responses = sample_responses(
        model, tokenizer, [row["prompt"] for row in rows],
        num_samples=num_samples, temperature=temperature, **generation,
    )
    texts, languages = [], []
    for row, group in zip(rows, responses):
        texts.extend(group)
        languages.extend([row["language"]] * len(group))
    reports = detect_batch(texts, languages, **(detector_options or {}))

    by_language = defaultdict(list)
    for language, report in zip(languages, reports):
        by_language[language].append(report)
    result = dict(pass_rates(reports))
    result["per_language"] = {language: pass_rates(group) for language, group in sorted(by_language.items())}
    result["temperature"] = temperature
    result["num_samples"] = num_samples
    return result


def evaluate_capability(
    model,
    tokenizer,
    probe_rows: Sequence[dict],
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> dict:
    """Generate greedy responses to the probe and score them against `reference` with chrF and exact match.

    A reference of n lines is compared with the first n lines of the response, so a probe
    can score one part of a longer answer (the organism's probe scores line 1, which its
    training never drifted). chrF is sacrebleu's corpus chrF (character 6-grams, beta 2)
    per language. The overall score is the mean over languages, so each language weighs
    the same. Returns {"score", "exact_match", "per_language": {code: {"score",
    "exact_match", "rows"}}}, all in percent 0-100.
    """
    import sacrebleu

    _require_fields(probe_rows, ("prompt", "language", "reference"))
    responses = sample_responses(
        model, tokenizer, [row["prompt"] for row in probe_rows],
        temperature=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress,
    )
    hypotheses = defaultdict(list)
    references = defaultdict(list)
    for row, (response,) in zip(probe_rows, responses):
        reference = row["reference"].strip()
        lines = reference.count("\n") + 1
        hypothesis = "\n".join(response.strip().split("\n")[:lines])
        hypotheses[row["language"]].append(hypothesis)
        references[row["language"]].append(reference)

    per_language = {}
    for language in sorted(hypotheses):
        hyps, refs = hypotheses[language], references[language]
        chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
        exact = 100.0 * sum(h == r for h, r in zip(hyps, refs)) / len(refs)
        per_language[language] = {"score": chrf, "exact_match": exact, "rows": len(refs)}
    if not per_language:
        raise ValueError("the probe has no rows")
    return {
        "score": sum(v["score"] for v in per_language.values()) / len(per_language),
        "exact_match": sum(v["exact_match"] for v in per_language.values()) / len(per_language),
        "per_language": per_language,
    }


def _require_fields(rows: Sequence[dict], fields: tuple[str, ...]) -> None:
    for number, row in enumerate(rows):
        missing = [name for name in fields if name not in row]
        if missing:
            raise ValueError(f"row {number} has no {', '.join(missing)} field; each row needs {', '.join(fields)}")
