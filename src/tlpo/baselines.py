"""Sequence-level baselines for language confusion, built with TRL 1.x.

Each function fine-tunes a causal LM on the same prompt rows that `tlpo train` uses
(dicts with `prompt`, `language` and, for SFT, `reference`) and saves the result to an
output folder:

- `train_sft`: supervised fine-tuning on the reference answers, loss on the answer only
  (`trl.SFTTrainer` on a conversational prompt/completion dataset).
- `train_grpo`: GRPO (`trl.GRPOTrainer`) with a reward of 1.0 for a completion that the
  confusion detector passes and 0.0 otherwise.
- `train_dpo` and `train_orpo`: DPO (`trl.DPOTrainer`) and ORPO
  (`trl.experimental.orpo.ORPOTrainer`) on preference pairs built as the TLPO paper
  (Choo et al., ACL 2026, arXiv 2604.26553) built them: 16 samples per prompt at
  temperature 0.7, prompts where 0/16 or 16/16 samples are confused dropped,
  chosen = a random clean sample, rejected = a random confused one.

`config` maps field names of the matching TRL config class (`SFTConfig`, `GRPOConfig`,
`DPOConfig`, `ORPOConfig`) to values and overrides the defaults below. A `peft_config`
(for example a `peft.LoraConfig`) trains an adapter in place of the full model. The
TRL trainers are accelerate-aware, so `accelerate launch` runs these functions on
several processes. The preference pairs are built once, on the main process, and
cached in the output folder, so every process trains on the same pairs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tlpo.fileio import write_jsonl_atomically

logger = logging.getLogger(__name__)

METHODS = ("sft", "dpo", "orpo", "grpo")

# Pair construction as in the TLPO paper's DPO and ORPO baselines.
PAIR_NUM_SAMPLES = 16
PAIR_TEMPERATURE = 0.7
PAIRS_FILENAME = "preference_pairs.jsonl"
PAIR_STATS_FILENAME = "preference_pairs_stats.json"

# Defaults that differ from TRL's own. Everything else is TRL's default for the method.
# bf16 is switched on only where the hardware supports it, because TRL's configs default
# to bf16 and then raise on a CPU-only machine.
_COMMON_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "report_to": "none",
    "save_strategy": "no",
}


@dataclass
class BaselineResult:
    """Outputs and costs of one baseline run."""

    method: str
    output_dir: Path
    # Rows of `Trainer.state.log_history`: one dict per logging step, with "loss".
    log_history: list[dict[str, Any]]
    num_train_examples: int
    train_seconds: float
    # Seconds spent sampling preference pairs (DPO and ORPO) before training starts.
    data_seconds: float = 0.0
    # New tokens sampled: pair sampling for DPO/ORPO, rollouts for GRPO, 0 for SFT.
    tokens_generated: int = 0
    # Statistics of the preference-pair construction (DPO and ORPO only).
    pair_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return [row["loss"] for row in self.log_history if "loss" in row]


# --------------------------------------------------------------------------------------
# Inputs


def _bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_tokenizer(model_path: str | os.PathLike):
    """Load the tokenizer of `model_path` and check that it can format chat prompts."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer in {model_path} has no chat template; the baselines format "
            "prompts as chat messages, so use an instruction-tuned model or set "
            "tokenizer.chat_template and save the tokenizer again"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class _Row:
    messages: list[dict]
    language: str
    reference: str | None


def _check_rows(rows: Sequence[dict], *, need_reference: bool = False) -> list[_Row]:
    """Validate prompt rows with `tlpo.data.validate_rows`, keeping each row's `reference`."""
    from tlpo.data import validate_rows

    rows = list(rows)
    validated = validate_rows(rows, where="prompts")
    checked = []
    for index, (raw, row) in enumerate(zip(rows, validated)):
        reference = raw.get("reference")
        if need_reference and not (isinstance(reference, str) and reference.strip()):
            raise ValueError(
                f"prompts row {index + 1} has no 'reference' answer, and SFT trains on the reference "
                "answers; add a 'reference' to every row or use dpo, orpo or grpo, which need none"
            )
        checked.append(_Row(row.messages, row.language, reference))
    return checked


def _assistant_message(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def invalid_config_values(config_class, values: dict) -> tuple[list[str], list[tuple[str, Any, Any]]]:
    """Find the invalid entries of `values` for the dataclass `config_class`.

    Returns the sorted names that are not fields of the class, and (name, value,
    default) for each value that is not a finite number where the field's default is one.
    """
    defaults = {item.name: item.default for item in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(defaults))
    not_numbers = []
    for name, value in values.items():
        default = defaults.get(name)
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if not numeric or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            not_numbers.append((name, value, default))
    return unknown, not_numbers


def _build_config(config_class, output_dir: Path, defaults: dict, overrides: dict | None):
    """Build a TRL config from our defaults and the caller's overrides, naming bad fields."""
    values = {
        **_COMMON_DEFAULTS,
        "bf16": _bf16_supported(),
        "dataloader_pin_memory": torch.cuda.is_available(),
        **defaults,
        **(overrides or {}),
    }
    values["output_dir"] = str(output_dir)
    unknown, _ = invalid_config_values(config_class, values)
    if unknown:
        raise ValueError(
            f"unknown {config_class.__name__} field(s): {', '.join(unknown)}; "
            "see the TRL documentation of that class for the valid names"
        )
    _, not_numbers = invalid_config_values(config_class, overrides or {})
    if not_numbers:
        name, value, default = not_numbers[0]
        raise ValueError(
            f"invalid {config_class.__name__} field {name}={value!r}; it must be a number like its default {default!r}"
        )
    try:
        return config_class(**values)
    except TypeError as error:  # for example a string where the config compares numbers
        raise ValueError(
            f"invalid {config_class.__name__} settings ({error}); check the types of the values in the config"
        ) from None


def _load_model(model_path: str | os.PathLike):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)


def _run_trainer(trainer, method: str, output_dir: Path, tokenizer) -> tuple[list[dict], float]:
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(output_dir))
    history = list(trainer.state.log_history)
    bad = [row["loss"] for row in history if "loss" in row and not math.isfinite(row["loss"])]
    if bad:
        logger.warning("%s logged a non-finite loss %s; lower the learning rate", method, bad[0])
    return history, seconds


# --------------------------------------------------------------------------------------
# SFT


def train_sft(
    model_path: str | os.PathLike,
    rows: Sequence[dict],
    output_dir: str | os.PathLike,
    *,
    config: dict | None = None,
    peft_config=None,
    callbacks: Iterable | None = None,
) -> BaselineResult:
    """Fine-tune on the rows' reference responses with `trl.SFTTrainer`.

    The loss covers only the assistant turn (TRL's completion-only loss on a
    prompt/completion dataset), not the prompt or the chat template around it.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = _check_rows(rows, need_reference=True)
    output_dir = Path(output_dir)
    args = _build_config(
        SFTConfig,
        output_dir,
        {"completion_only_loss": True},
        config,
    )
    dataset = Dataset.from_list(
        [
            {"prompt": row.messages, "completion": _assistant_message(row.reference)}
            for row in rows
        ]
    )
    tokenizer = load_tokenizer(model_path)
    trainer = SFTTrainer(
        model=_load_model(model_path),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
    )
    history, seconds = _run_trainer(trainer, "sft", output_dir, tokenizer)
    return BaselineResult("sft", output_dir, history, len(dataset), seconds)


# --------------------------------------------------------------------------------------
# GRPO


class ConsistencyReward:
    """GRPO reward: 1.0 for a completion without language confusion, else 0.0.

    TRL calls it with the batch's completions and every other dataset column as a
    keyword argument, so the dataset's `language` column arrives as `language`. It
    counts the completion tokens it scores, which is the number of tokens GRPO sampled.
    """

    __name__ = "consistency"  # TRL names the logged reward after this attribute.

    def __init__(self, detector_options: dict | None = None):
        self.detector_options = dict(detector_options or {})
        self.tokens_scored = 0

    def __call__(self, completions, language, completion_ids=None, **_unused) -> list[float]:
        from tlpo.detection import detect

        rewards = []
        for completion, target in zip(completions, language, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            rewards.append(1.0 if detect(text, target, **self.detector_options).passed else 0.0)
        if completion_ids is not None:
            self.tokens_scored += sum(len(ids) for ids in completion_ids)
        return rewards


def train_grpo(
    model_path: str | os.PathLike,
    rows: Sequence[dict],
    output_dir: str | os.PathLike,
    *,
    config: dict | None = None,
    peft_config=None,
    detector_options: dict | None = None,
    callbacks: Iterable | None = None,
) -> BaselineResult:
    """Fine-tune with `trl.GRPOTrainer`, rewarding completions that pass the detector.

    `detector_options` are keyword arguments of `tlpo.detection.detect` (for example
    `{"method": "script"}`), the same options that `tlpo train` takes.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = _check_rows(rows)
    output_dir = Path(output_dir)
    args = _build_config(
        GRPOConfig,
        output_dir,
        # The TLPO paper's rollout settings: 8 samples per prompt, temperature 0.6.
        {"num_generations": 8, "temperature": 0.6},
        config,
    )
    dataset = Dataset.from_list(
        [{"prompt": row.messages, "language": row.language} for row in rows]
    )
    tokenizer = load_tokenizer(model_path)
    reward = ConsistencyReward(detector_options)
    trainer = GRPOTrainer(
        model=_load_model(model_path),
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
    )
    history, seconds = _run_trainer(trainer, "grpo", output_dir, tokenizer)
    return BaselineResult(
        "grpo", output_dir, history, len(dataset), seconds, tokens_generated=reward.tokens_scored
    )


# --------------------------------------------------------------------------------------
# Preference pairs for DPO and ORPO


def build_preference_pairs(
    model,
    tokenizer,
    rows: Sequence[dict],
    *,
    seed: int = 0,
    num_samples: int = PAIR_NUM_SAMPLES,
    temperature: float = PAIR_TEMPERATURE,
    max_new_tokens: int = 256,
    batch_size: int = 64,
    detector_options: dict | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """Sample `num_samples` responses per prompt and pick one clean and one confused.

    Prompts whose samples are all clean or all confused carry no preference and are
    dropped. From the rest, `chosen` is a clean sample and `rejected` a confused one,
    both drawn with `random.Random(seed)`. Sample `j` of prompt `i` is drawn with its
    own seed `sequence_seed(seed, i, j)` (see `tlpo.rollout`), so the pairs depend only
    on the model, the rows and `seed`. Returns the pairs (dicts with `prompt` as chat
    messages, `language`, and `chosen`, `rejected` as response text) and statistics of
    the construction.
    """
    from tlpo.data import context_length, encode_prompts, validate_rows
    from tlpo.detection import detect
    from tlpo.rollout import sample_responses, sequence_seed

    rows = validate_rows(rows, where="prompts")
    prompt_ids = encode_prompts(
        tokenizer, rows, max_new_tokens=max_new_tokens, max_length=context_length(model), where="prompts"
    )
    repeated = [ids for ids in prompt_ids for _ in range(num_samples)]
    seeds = [sequence_seed(seed, index, sample) for index in range(len(rows)) for sample in range(num_samples)]
    with tqdm(total=len(repeated), desc="sampling preference pairs", unit="seq") as progress:
        response_ids = sample_responses(
            model,
            tokenizer,
            repeated,
            seeds,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
        )

    rng = random.Random(seed)
    pairs = []
    confused_counts = []
    for index, row in enumerate(rows):
        ids = response_ids[index * num_samples : (index + 1) * num_samples]
        responses = [tokenizer.decode(sample, skip_special_tokens=True) for sample in ids]
        verdicts = [detect(text, row.language, **(detector_options or {})).passed for text in responses]
        clean = [text for text, passed in zip(responses, verdicts) if passed]
        confused = [text for text, passed in zip(responses, verdicts) if not passed]
        confused_counts.append(len(confused))
        if not clean or not confused:
            continue
        pairs.append(
            {
                "prompt": row.messages,
                "language": row.language,
                "chosen": rng.choice(clean),
                "rejected": rng.choice(confused),
            }
        )
    stats = {
        "prompts": len(rows),
        "pairs": len(pairs),
        "dropped_all_clean": sum(1 for count in confused_counts if count == 0),
        "dropped_all_confused": sum(1 for count in confused_counts if count == num_samples),
        "confused_share": sum(confused_counts) / (num_samples * len(rows)),
        "tokens_generated": sum(len(ids) for ids in response_ids),
    }
    return pairs, stats


def _write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomically(path, records)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _cache_matches(pairs_path: Path, stats_path: Path, settings: dict) -> bool:
    if not (pairs_path.exists() and stats_path.exists()):
        return False
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    return all(stats.get(key) == value for key, value in settings.items())


def prepare_preference_pairs(
    model_path: str | os.PathLike,
    rows: Sequence[dict],
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    max_new_tokens: int = 256,
    batch_size: int = 64,
    detector_options: dict | None = None,
) -> tuple[list[dict], dict[str, Any], float]:
    """Build the preference pairs once and cache them in `output_dir`.

    Under `accelerate launch` the main process samples and writes the pairs while the
    other processes wait, then every process reads the same file. A later call reuses
    the cache when it was built with the same seed, sampling options and prompt count.
    Returns the pairs, the statistics and the seconds
    spent sampling (0.0 when the cache was reused).
    """
    from accelerate import PartialState

    output_dir = Path(output_dir)
    pairs_path = output_dir / PAIRS_FILENAME
    stats_path = output_dir / PAIR_STATS_FILENAME
    seconds = 0.0
    state = PartialState()
    with state.main_process_first():
        settings = {"seed": seed, "max_new_tokens": max_new_tokens, "prompts": len(rows)}
        if state.is_main_process and not _cache_matches(pairs_path, stats_path, settings):
            start = time.perf_counter()
            model = _load_model(model_path).to(state.device)
            model.eval()
            tokenizer = load_tokenizer(model_path)
            pairs, stats = build_preference_pairs(
                model,
                tokenizer,
                rows,
                seed=seed,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                detector_options=detector_options,
            )
            seconds = time.perf_counter() - start
            stats.update(seconds=seconds, seed=seed, max_new_tokens=max_new_tokens)
            del model
            _write_jsonl_atomic(pairs_path, pairs)
            temporary = stats_path.with_name(f".{stats_path.name}.tmp")
            temporary.write_text(json.dumps(stats, indent=2), encoding="utf-8")
            os.replace(temporary, stats_path)
            logger.info(
                "built %d preference pairs from %d prompts (%d all clean, %d all confused dropped)",
                stats["pairs"],
                stats["prompts"],
                stats["dropped_all_clean"],
                stats["dropped_all_confused"],
            )
    pairs = _read_jsonl(pairs_path)
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else {}
    if not pairs:
        raise ValueError(
            f"no preference pairs: in all {stats.get('prompts', len(rows))} prompts the "
            f"{PAIR_NUM_SAMPLES} samples were all clean ({stats.get('dropped_all_clean')}) or all "
            f"confused ({stats.get('dropped_all_confused')}); DPO and ORPO need prompts where the "
            "model is sometimes confused, so use more prompts or prompts the model gets wrong"
        )
    return pairs, stats, seconds


def _preference_dataset(pairs: Sequence[dict]):
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": pair["prompt"],
                "chosen": _assistant_message(pair["chosen"]),
                "rejected": _assistant_message(pair["rejected"]),
            }
            for pair in pairs
        ]
    )


def _train_preference(
    method: str,
    model_path,
    rows,
    output_dir,
    *,
    config: dict | None,
    peft_config,
    detector_options: dict | None,
    pair_options: dict | None,
    callbacks: Iterable | None,
) -> BaselineResult:
    _check_rows(rows)
    output_dir = Path(output_dir)
    seed = int((config or {}).get("seed", 42))
    pairs, stats, data_seconds = prepare_preference_pairs(
        model_path, rows, output_dir, seed=seed, detector_options=detector_options, **(pair_options or {})
    )
    dataset = _preference_dataset(pairs)
    tokenizer = load_tokenizer(model_path)
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = _build_config(DPOConfig, output_dir, {}, config)
        trainer_class = DPOTrainer
    else:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = _build_config(ORPOConfig, output_dir, {}, config)
        trainer_class = ORPOTrainer
    trainer = trainer_class(
        model=_load_model(model_path),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
    )
    history, seconds = _run_trainer(trainer, method, output_dir, tokenizer)
    return BaselineResult(
        method,
        output_dir,
        history,
        len(dataset),
        seconds,
        data_seconds=data_seconds,
        tokens_generated=int(stats.get("tokens_generated", 0)),
        pair_stats=stats,
    )


def train_dpo(
    model_path: str | os.PathLike,
    rows: Sequence[dict],
    output_dir: str | os.PathLike,
    *,
    config: dict | None = None,
    peft_config=None,
    detector_options: dict | None = None,
    pair_options: dict | None = None,
    callbacks: Iterable | None = None,
) -> BaselineResult:
    """Build preference pairs (see `build_preference_pairs`) and train with `trl.DPOTrainer`.

    `pair_options` sets `max_new_tokens` and `batch_size` of the pair sampling. The
    reference model is the initial model, or the base weights under `peft_config`.
    """
    return _train_preference(
        "dpo",
        model_path,
        rows,
        output_dir,
        config=config,
        peft_config=peft_config,
        detector_options=detector_options,
        pair_options=pair_options,
        callbacks=callbacks,
    )


def train_orpo(
    model_path: str | os.PathLike,
    rows: Sequence[dict],
    output_dir: str | os.PathLike,
    *,
    config: dict | None = None,
    peft_config=None,
    detector_options: dict | None = None,
    pair_options: dict | None = None,
    callbacks: Iterable | None = None,
) -> BaselineResult:
    """Build preference pairs (see `build_preference_pairs`) and train with ORPO.

    Uses `trl.experimental.orpo.ORPOTrainer`, which needs no reference model.
    `pair_options` is as in `train_dpo`.
    """
    return _train_preference(
        "orpo",
        model_path,
        rows,
        output_dir,
        config=config,
        peft_config=peft_config,
        detector_options=detector_options,
        pair_options=pair_options,
        callbacks=callbacks,
    )


TRAIN_FUNCTIONS: dict[str, Callable[..., BaselineResult]] = {
    "sft": train_sft,
    "dpo": train_dpo,
    "orpo": train_orpo,
    "grpo": train_grpo,
}


def run_baseline(method: str, model_path, rows, output_dir, **options) -> BaselineResult:
    """Run the baseline named `method` (one of `METHODS`) with the options of its function."""
    if method not in TRAIN_FUNCTIONS:
        raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    if method == "sft":
        options.pop("detector_options", None)
    if method in ("sft", "grpo"):
        options.pop("pair_options", None)
    return TRAIN_FUNCTIONS[method](model_path, rows, output_dir, **options)
