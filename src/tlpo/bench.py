"""`tlpo bench`: TLPO and the sequence-level baselines side by side on one model.

For each seed, every method fine-tunes the same model on the same training prompts with
the same optimizer settings (`BenchBudget`): TLPO (`tlpo.trainer.TLPOTrainer`) and SFT,
DPO, ORPO and GRPO (`tlpo.baselines`). The untrained base model is the sixth row. Each
result is then measured the same way:

- consistency: RPR/LPR/WPR (script-rule detector, `tlpo.detection`) of responses sampled
  at the rollout temperature for the held-out prompts, overall and per language;
- capability: chrF of greedy answers on the probe set (`tlpo.evaluation`), and the
  probe NLL, the mean negative log-likelihood per token of the probe's references,
  which still moves when chrF is saturated;
- `kl_clean`: how far behaviour that needed no fix moved. The held-out prompts whose
  greedy base response passes the detector are fed, with that base response, to the
  base model and to the trained model (teacher forcing). The value is the mean over all
  response tokens of KL(trained || base) of the two next-token distributions, in nats;
- cost: wall time of training (for DPO/ORPO including the pair sampling), tokens
  generated and forward passes of the causal LMs during training (see `CostMeter`);
- speed: RPR on a subset of the held-out prompts every few optimizer steps, with the
  training seconds at that point (the measurements themselves are not counted), and
  from that curve the time to the final RPR (`time_to_final`).

Each (method, seed) writes `runs/<method>-seed<seed>/metrics.json` when it finishes, and a
rerun with the same output folder skips the runs that have one, so an interrupted
benchmark resumes. The summary is `results.json`, `results.md` and `results.png`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tlpo.fileio import write_json_atomically, write_text_atomically

logger = logging.getLogger(__name__)

METHODS = ("base", "tlpo", "sft", "dpo", "orpo", "grpo")
TRAINED_METHODS = METHODS[1:]


# --------------------------------------------------------------------------------------
# Budgets


@dataclass
class BenchBudget:
    """Data sizes, shared optimizer settings and per-method settings of one benchmark run.

    Every method trains on the same prompts, once each, with the same optimizer
    settings and `prompts_per_step` prompts per optimizer step. TLPO, SFT and GRPO
    therefore make the same number of steps; DPO and ORPO make one pass over their
    pairs, which come from the same prompts. The defaults are sized for the embedded
    default model (about 1.3 M parameters), which needs far larger learning rates than
    the 8 B models of the TLPO paper.
    """

    train_prompts_per_language: int | None  # None: all of train_prompts.jsonl
    eval_prompts_per_language: int | None  # None: all of eval_prompts.jsonl
    probe_prompts_per_language: int | None  # None: all of probe.jsonl
    max_new_tokens: int  # for evaluation, rollouts and pair sampling
    prompts_per_step: int
    num_generations: int  # TLPO and GRPO rollouts per prompt
    learning_rate: float
    min_learning_rate: float  # floor of the cosine decay
    eval_samples: int  # responses per held-out prompt for RPR/LPR/WPR
    track_every: int  # optimizer steps between two measurements during training
    track_prompts_per_language: int
    track_samples: int
    temperature: float = 0.7  # rollouts, pair sampling and the RPR measurement
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    adam_beta2: float = 0.95
    time_tolerance: float = 1.0  # RPR points below the final value that count as reached
    tlpo: dict[str, Any] = field(default_factory=dict)  # TLPOConfig overrides
    sft: dict[str, Any] = field(default_factory=dict)  # SFTConfig overrides
    dpo: dict[str, Any] = field(default_factory=dict)  # DPOConfig overrides
    orpo: dict[str, Any] = field(default_factory=dict)  # ORPOConfig overrides
    grpo: dict[str, Any] = field(default_factory=dict)  # GRPOConfig overrides


def _method_settings(prompts_per_step: int, num_generations: int) -> dict[str, dict[str, Any]]:
    return {
        "tlpo": {
            "per_device_train_batch_size": prompts_per_step,
            "num_generations": num_generations,
            # Above what one step can mine, so every mined point trains in the step
            # that mined it (on-policy), as in `tlpo demo`.
            "items_per_step": prompts_per_step * num_generations * 16,
            "rollout_batch_size": 256,
        },
        "sft": {"per_device_train_batch_size": prompts_per_step, "max_length": 256},
        "dpo": {"per_device_train_batch_size": prompts_per_step, "max_length": 256, "beta": 0.1},
        "orpo": {"per_device_train_batch_size": prompts_per_step, "max_length": 256, "beta": 0.1},
        # GRPO's batch size counts completions, so one step takes the same prompts and
        # the same number of rollouts as one TLPO step.
        "grpo": {
            "per_device_train_batch_size": prompts_per_step * num_generations,
            "num_generations": num_generations,
            "beta": 0.04,
        },
    }


# The settings of `tlpo demo` for every method: 40 steps of 16 prompts (80 per
# language), 16 rollouts per prompt for TLPO and GRPO, learning rate 1e-3 decaying to
# 5e-4. RPR is measured on all 256 held-out prompts, 4 samples each at temperature 0.7
# (1,024 responses, so one response moves it by 0.1 point), and tracked on 16 prompts
# per language, 2 samples each, every 5 steps.
#
# The learning rate of each method is the one of {3e-4, 1e-3, 3e-3} (DPO: {1e-4, 3e-4,
# 1e-3}) that gave the highest held-out RPR in a one-seed sweep, with the decay floor at
# half of it (docs/BENCHMARKS.md has the sweep). Only DPO differs from 1e-3: at 1e-3 its
# RPR rose to 89 after 15 steps and then fell back to the base value.
_FULL_SETTINGS = _method_settings(prompts_per_step=16, num_generations=16)
_FULL_SETTINGS["dpo"].update(learning_rate=3e-4, lr_scheduler_kwargs={"min_lr": 1.5e-4})

FULL_BUDGET = BenchBudget(
    train_prompts_per_language=80,
    eval_prompts_per_language=None,
    probe_prompts_per_language=None,
    max_new_tokens=64,
    prompts_per_step=16,
    num_generations=16,
    learning_rate=1e-3,
    min_learning_rate=5e-4,
    eval_samples=4,
    track_every=5,
    track_prompts_per_language=16,
    track_samples=2,
    **_FULL_SETTINGS,
)

_QUICK_SETTINGS = _method_settings(prompts_per_step=8, num_generations=4)
_QUICK_SETTINGS["dpo"].update(learning_rate=3e-4, lr_scheduler_kwargs={"min_lr": 1.5e-4})

QUICK_BUDGET = BenchBudget(
    train_prompts_per_language=4,
    eval_prompts_per_language=4,
    probe_prompts_per_language=4,
    max_new_tokens=64,
    prompts_per_step=8,
    num_generations=4,
    learning_rate=1e-3,
    min_learning_rate=5e-4,
    eval_samples=1,
    track_every=2,
    track_prompts_per_language=2,
    track_samples=1,
    **_QUICK_SETTINGS,
)


def budget_with(base: BenchBudget, overrides: dict[str, Any]) -> BenchBudget:
    """Return `base` with the fields in `overrides` replaced (for `tlpo bench --budget`).

    A per-method mapping (`tlpo`, `sft`, `dpo`, `orpo`, `grpo`) is merged into the base
    one, so `{"dpo": {"beta": 0.5}}` keeps the other DPO settings. A new
    `learning_rate` without `min_learning_rate` keeps the base ratio of the two. Raises ValueError
    naming an unknown field or a value of the wrong type.
    """
    fields = {item.name: item for item in dataclasses.fields(BenchBudget)}
    values: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in fields:
            raise ValueError(f"unknown budget field {name!r}; valid fields: {', '.join(fields)}")
        current = getattr(base, name)
        if isinstance(value, str) and not isinstance(current, dict):
            # PyYAML reads 1e-5 (no dot) as a string.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(current, int) and isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(current, dict):
            if not isinstance(value, dict):
                raise ValueError(f"budget field {name!r} must be a mapping of trainer settings, got {value!r}")
            value = {**current, **value}
        elif isinstance(value, bool) or not isinstance(value, (int, float)) and value is not None:
            raise ValueError(f"budget field {name!r} must be a number, got {value!r}")
        elif value is None and not name.endswith("_per_language"):
            raise ValueError(f"budget field {name!r} must be a number, got null")
        elif isinstance(current, int) and not isinstance(value, int) and value is not None:
            raise ValueError(f"budget field {name!r} must be a whole number, got {value!r}")
        values[name] = value
    if "learning_rate" in values and "min_learning_rate" not in values:
        # The decay floor keeps its ratio to the peak (half of it in both default budgets).
        values["min_learning_rate"] = values["learning_rate"] * base.min_learning_rate / base.learning_rate
    # Settings derived from the shared fields follow them, unless the same file sets
    # them for one method: the batch shapes follow prompts_per_step and
    # num_generations, and a shared learning rate replaces a per-method one.
    derived = _method_settings(
        values.get("prompts_per_step", base.prompts_per_step), values.get("num_generations", base.num_generations)
    )
    for method in derived:
        own = overrides.get(method) or {}
        settings = dict(values.get(method, getattr(base, method)))
        if "prompts_per_step" in overrides or "num_generations" in overrides:
            for key, value in derived[method].items():
                if key in ("per_device_train_batch_size", "num_generations", "items_per_step") and key not in own:
                    settings[key] = value
        if "learning_rate" in overrides or "min_learning_rate" in overrides:
            for key in ("learning_rate", "lr_scheduler_kwargs"):
                if key not in own:
                    settings.pop(key, None)
        if "learning_rate" in own and "lr_scheduler_kwargs" not in own and isinstance(own["learning_rate"], (int, float)):
            # A method's own peak gets its own floor, at the budget's ratio of floor to peak.
            ratio = values.get("min_learning_rate", base.min_learning_rate) / values.get(
                "learning_rate", base.learning_rate
            )
            settings["lr_scheduler_kwargs"] = {"min_lr": own["learning_rate"] * ratio}
        values[method] = settings
    return dataclasses.replace(base, **values)


# Lower bounds of the numeric budget fields: (bound, whether the bound itself is allowed).
_BUDGET_BOUNDS = {
    "train_prompts_per_language": (1, True),
    "eval_prompts_per_language": (1, True),
    "probe_prompts_per_language": (1, True),
    "max_new_tokens": (1, True),
    "prompts_per_step": (1, True),
    "num_generations": (2, True),  # GRPO's advantages need two samples of a prompt
    "learning_rate": (0.0, False),
    "min_learning_rate": (0.0, True),
    "eval_samples": (1, True),
    "track_every": (1, True),
    "track_prompts_per_language": (1, True),
    "track_samples": (1, True),
    "temperature": (0.0, False),
    "weight_decay": (0.0, True),
    "warmup_ratio": (0.0, True),
    "adam_beta2": (0.0, False),
    "time_tolerance": (0.0, True),
}


def check_budget(budget: BenchBudget) -> None:
    """Raise ValueError naming the first budget field with an invalid value.

    Checks the numeric ranges and that every per-method setting is a field of that
    method's config class, so a typo fails before anything is trained.
    NOTE: per-method values are checked to be numbers, not their ranges, so a value the
    trainer accepts but cannot use (for example a negative GRPO beta) still runs.
    """
    for name, (bound, inclusive) in _BUDGET_BOUNDS.items():
        value = getattr(budget, name)
        if value is None and name.endswith("_per_language"):
            continue
        if not math.isfinite(value):
            raise ValueError(f"invalid budget field {name}={value!r}; it must be a finite number")
        if value < bound or (value == bound and not inclusive):
            relation = "at least" if inclusive else "above"
            raise ValueError(f"invalid budget field {name}={value!r}; it must be {relation} {bound}")
    if budget.warmup_ratio >= 1 or budget.adam_beta2 >= 1:
        name = "warmup_ratio" if budget.warmup_ratio >= 1 else "adam_beta2"
        raise ValueError(f"invalid budget field {name}={getattr(budget, name)!r}; it must be below 1")
    if budget.min_learning_rate > budget.learning_rate:
        raise ValueError(
            f"invalid budget: min_learning_rate={budget.min_learning_rate!r} is above "
            f"learning_rate={budget.learning_rate!r}; the decay floor must not exceed the peak"
        )
    from trl import DPOConfig, GRPOConfig, SFTConfig

    from tlpo.baselines import invalid_config_values
    from tlpo.config import TLPOConfig

    with warnings.catch_warnings():
        # Only the field names are read here. The ORPO run itself still warns that its API is experimental.
        warnings.simplefilter("ignore")
        from trl.experimental.orpo import ORPOConfig

    classes = {"tlpo": TLPOConfig, "sft": SFTConfig, "dpo": DPOConfig, "orpo": ORPOConfig, "grpo": GRPOConfig}
    for method, config_class in classes.items():
        settings = getattr(budget, method)
        unknown, not_numbers = invalid_config_values(config_class, settings)
        if unknown:
            raise ValueError(
                f"unknown {config_class.__name__} field(s) in the budget's {method} settings: "
                f"{', '.join(unknown)}; see the documentation of {config_class.__name__} for the valid names"
            )
        if not_numbers:
            name, value, _ = not_numbers[0]
            raise ValueError(f"invalid budget setting {method}.{name}={value!r}; it must be a finite number")
        peak = settings.get("learning_rate", budget.learning_rate)
        floor = (settings.get("lr_scheduler_kwargs") or {}).get("min_lr", budget.min_learning_rate)
        if not isinstance(peak, (int, float)) or peak <= 0:
            raise ValueError(f"invalid budget setting {method}.learning_rate={peak!r}; it must be above 0")
        if floor > peak:
            raise ValueError(
                f"invalid budget: the {method} decay floor {floor!r} is above its learning rate {peak!r}; "
                f"set {method}: {{lr_scheduler_kwargs: {{min_lr: ...}}}} below the peak"
            )


# --------------------------------------------------------------------------------------
# Cost accounting


class CostMeter:
    """Count forward passes and generated tokens of every causal LM while active.

    A forward pass is one call of a `transformers` causal LM (a `GenerationMixin`
    model: the policy, a reference model, or the model inside a PEFT wrapper), whatever
    its batch size. Each step of `generate` (the prefill and every decoding step) is
    one, recognised by the KV cache it passes, and yields one generated token per row.
    So `tokens_generated` includes the tokens `generate` still computes for rows that
    already ended, which is compute spent, not text kept.
    `forward_tokens` is the number of (row, position) pairs fed to all forward passes.
    """

    def __init__(self):
        self.forward_passes = 0
        self.forward_tokens = 0
        self.tokens_generated = 0
        self._handle = None
        self._paused = False

    @contextlib.contextmanager
    def paused(self):
        """Count nothing inside this block (measurements made during training)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def _hook(self, module, args, kwargs, output) -> None:
        from transformers import GenerationMixin

        if self._paused or not isinstance(module, GenerationMixin):
            return
        inputs = kwargs.get("input_ids")
        if inputs is None:
            inputs = kwargs.get("inputs_embeds")
        if inputs is None and args:
            inputs = args[0]
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
            return
        rows, positions = int(inputs.shape[0]), int(inputs.shape[1])
        self.forward_passes += 1
        self.forward_tokens += rows * positions
        # Only `generate` passes a KV cache: transformers 5 names it `cache`, earlier
        # versions `past_key_values`. Each such call yields one new token per row.
        if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
            self.tokens_generated += rows

    def __enter__(self) -> CostMeter:
        from torch.nn.modules.module import register_module_forward_hook

        self._handle = register_module_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._handle = None

    def as_dict(self) -> dict[str, int]:
        return {
            "forward_passes": self.forward_passes,
            "forward_tokens": self.forward_tokens,
            "tokens_generated": self.tokens_generated,
        }


# --------------------------------------------------------------------------------------
# Data


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def take_per_language(rows: Sequence[dict], count: int | None) -> list[dict]:
    """Keep the first `count` rows of each language, in file order (all rows for None)."""
    if count is None:
        return list(rows)
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        language = row["language"]
        if seen.get(language, 0) < count:
            seen[language] = seen.get(language, 0) + 1
            kept.append(row)
    return kept


@dataclass
class BenchData:
    model_dir: Path
    train_rows: list[dict]
    eval_rows: list[dict]
    probe_rows: list[dict]
    track_rows: list[dict]  # the first held-out prompts of each language, for RPR during training


def load_bench_data(model_dir: Path, budget: BenchBudget) -> BenchData:
    for name in ("train_prompts.jsonl", "eval_prompts.jsonl", "probe.jsonl"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(
                f"{model_dir / name} not found; the benchmark needs a model folder with "
                "train_prompts.jsonl, eval_prompts.jsonl and probe.jsonl, like the embedded default model"
            )
    eval_rows = take_per_language(_read_jsonl(model_dir / "eval_prompts.jsonl"), budget.eval_prompts_per_language)
    return BenchData(
        model_dir=model_dir,
        train_rows=take_per_language(_read_jsonl(model_dir / "train_prompts.jsonl"), budget.train_prompts_per_language),
        eval_rows=eval_rows,
        probe_rows=take_per_language(_read_jsonl(model_dir / "probe.jsonl"), budget.probe_prompts_per_language),
        track_rows=take_per_language(eval_rows, budget.track_prompts_per_language),
    )


# --------------------------------------------------------------------------------------
# Measurements


def _load(model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    return model, tokenizer


def greedy_clean_responses(model, tokenizer, rows: Sequence[dict], *, max_new_tokens: int) -> list[dict]:
    """Return the base model's greedy responses to `rows` that pass the detector.

    Each entry contains the prompt ids (chat template applied) and the response ids, the
    teacher-forcing input of `kl_from_base`.
    """
    from tlpo.data import encode_prompts, validate_rows
    from tlpo.detection import detect
    from tlpo.rollout import sample_responses

    validated = validate_rows(rows, where="eval prompts")
    prompt_ids = encode_prompts(tokenizer, validated, max_new_tokens=max_new_tokens, max_length=None)
    response_ids = sample_responses(
        model, tokenizer, prompt_ids, [0] * len(prompt_ids), temperature=0.0, max_new_tokens=max_new_tokens
    )
    clean = []
    for row, prompt, response in zip(validated, prompt_ids, response_ids):
        text = tokenizer.decode(response, skip_special_tokens=True)
        if response and detect(text, row.language).passed:
            clean.append({"prompt_ids": prompt, "response_ids": response, "language": row.language})
    return clean


def _response_log_probs(model, sequences: Sequence[dict], batch_size: int):
    """Yield (log-softmax logits, response mask) per batch of prompt + response id sequences."""
    device = next(model.parameters()).device
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        full = [item["prompt_ids"] + item["response_ids"] for item in batch]
        width = max(len(ids) for ids in full)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        response_mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, (item, ids) in enumerate(zip(batch, full)):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            # Logits at position t predict token t + 1, so the response tokens at
            # positions [p, p + r) are predicted at positions [p - 1, p + r - 1).
            prompt_length = len(item["prompt_ids"])
            response_mask[row, prompt_length - 1 : len(ids) - 1] = True
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits.float()
        yield torch.log_softmax(logits, dim=-1), input_ids.to(device), response_mask.to(device)


@torch.no_grad()
def kl_from_base(policy, base, sequences: Sequence[dict], *, batch_size: int = 32) -> float:
    """Mean per-token KL(policy || base) over the response tokens of `sequences`, in nats.

    Both models read the same prompt + response ids. The next-token distributions at
    the positions that predict response tokens are compared over the full vocabulary.
    """
    total, count = 0.0, 0
    policy.eval()
    batches = zip(_response_log_probs(policy, sequences, batch_size), _response_log_probs(base, sequences, batch_size))
    for (policy_logp, _, mask), (base_logp, _, _) in batches:
        per_token = (policy_logp.exp() * (policy_logp - base_logp)).sum(-1)
        total += float(per_token[mask].sum())
        count += int(mask.sum())
    return total / count if count else float("nan")


def probe_sequences(tokenizer, probe_rows: Sequence[dict]) -> list[dict]:
    """Encode each probe prompt (chat template) and its reference as teacher-forcing input."""
    from tlpo.data import encode_prompts, validate_rows

    validated = validate_rows(probe_rows, where="probe")
    prompt_ids = encode_prompts(tokenizer, validated, max_new_tokens=0, max_length=None)
    return [
        {"prompt_ids": prompt, "response_ids": tokenizer(row["reference"].strip(), add_special_tokens=False)["input_ids"]}
        for row, prompt in zip(probe_rows, prompt_ids)
    ]


@torch.no_grad()
def reference_nll(model, sequences: Sequence[dict], *, batch_size: int = 64) -> float:
    """Mean negative log-likelihood per reference token (nats) of `probe_sequences` output.

    chrF of greedy output stays at 100 while the reference is still the most likely
    output. This value moves with any drop in the reference's probability.
    """
    total, count = 0.0, 0
    model.eval()
    for log_probs, input_ids, mask in _response_log_probs(model, sequences, batch_size):
        # The log-probability of the token that actually follows each position.
        targets = torch.roll(input_ids, shifts=-1, dims=1)
        chosen = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        total -= float(chosen[mask].sum())
        count += int(mask.sum())
    return total / count if count else float("nan")


def measure_consistency(model, tokenizer, rows: Sequence[dict], budget: BenchBudget, *, samples: int, seed: int) -> dict:
    from tlpo.evaluation import evaluate_consistency

    return evaluate_consistency(
        model,
        tokenizer,
        rows,
        temperature=budget.temperature,
        num_samples=samples,
        max_new_tokens=budget.max_new_tokens,
        seed=seed,
        progress=False,
    )


def measure(model, tokenizer, data: BenchData, budget: BenchBudget, probe: Sequence[dict]) -> dict[str, Any]:
    """Consistency on the held-out prompts and capability on the probe set.

    Responses are sampled with the evaluation seed 0 for every method and training
    seed, so differences between rows come from the weights, not from the sampling.
    """
    from tlpo.evaluation import evaluate_capability

    consistency = measure_consistency(model, tokenizer, data.eval_rows, budget, samples=budget.eval_samples, seed=0)
    capability = evaluate_capability(
        model, tokenizer, data.probe_rows, max_new_tokens=budget.max_new_tokens, progress=False
    )
    return {
        "rpr": consistency["rpr"],
        "lpr": consistency.get("lpr"),
        "wpr": consistency.get("wpr"),
        "per_language": consistency.get("per_language", {}),
        "capability": capability["score"],
        "capability_per_language": capability.get("per_language", {}),
        "probe_nll": reference_nll(model, probe),
    }


def time_to_final(curve: Sequence[dict], tolerance: float) -> float | None:
    """Training seconds at the first point of `curve` within `tolerance` of its last RPR."""
    if not curve:
        return None
    final = curve[-1]["rpr"]
    return next(point["seconds"] for point in curve if point["rpr"] >= final - tolerance)


def kl_at_rpr(curve: Sequence[dict], level: float) -> float | None:
    """KL clean at the first point of `curve` whose RPR reaches `level` (None if none does)."""
    return next((point.get("kl_clean") for point in curve if point["rpr"] >= level), None)


# --------------------------------------------------------------------------------------
# Training


def _make_tracker(
    tokenizer, data: BenchData, budget: BenchBudget, *, base_model, clean: Sequence[dict], meter: CostMeter,
    clock_start: float, offset: float,
):
    from transformers import TrainerCallback

    class ConsistencyTracker(TrainerCallback):
        """Measure RPR and KL clean every `budget.track_every` steps, off the clock.

        `points` contains {"step", "seconds", "rpr", "kl_clean"}: RPR on the tracking
        prompts, KL(policy || base) on the never-confused held-out prompts (as
        `kl_from_base`), and the training time since `clock_start` plus `offset` (the
        pair sampling of DPO and ORPO), without the time of the measurements. The
        measurements are not counted by `meter` either.
        """

        def __init__(self):
            self.points: list[dict] = []
            self.measuring_seconds = 0.0

        def _measure(self, model, step: int) -> None:
            if self.points and self.points[-1]["step"] == step:
                return
            started = time.perf_counter()
            seconds = started - clock_start - self.measuring_seconds + offset
            was_training = model.training
            model.eval()
            with meter.paused():
                rates = measure_consistency(
                    model, tokenizer, data.track_rows, budget, samples=budget.track_samples, seed=0
                )
                kl = kl_from_base(model, base_model, clean)
            model.train(was_training)
            self.points.append({"step": step, "seconds": seconds, "rpr": rates["rpr"], "kl_clean": kl})
            self.measuring_seconds += time.perf_counter() - started

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % budget.track_every == 0:
                self._measure(model, state.global_step)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self._measure(model, state.global_step)

    return ConsistencyTracker()


def _optimizer_settings(budget: BenchBudget, seed: int) -> dict[str, Any]:
    """Return the trainer settings every method shares: one pass, the same schedule and AdamW."""
    return {
        "learning_rate": budget.learning_rate,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr": budget.min_learning_rate},
        "warmup_steps": budget.warmup_ratio,
        "weight_decay": budget.weight_decay,
        "adam_beta2": budget.adam_beta2,
        "num_train_epochs": 1.0,
        "seed": seed,
        "save_strategy": "no",
        "logging_steps": budget.track_every,
    }


def _trl_config(budget: BenchBudget, method: str, seed: int) -> dict[str, Any]:
    return {
        **_optimizer_settings(budget, seed),
        "activation_checkpointing": False,  # the model is small; recomputing activations only costs time
        **getattr(budget, method),
    }


PAIR_BATCH_SIZE = 128


def shared_preference_pairs(data: BenchData, budget: BenchBudget, seed: int, pairs_dir: Path) -> dict[str, Any]:
    """Sample the DPO/ORPO preference pairs of `seed` once into `pairs_dir`; return what that cost.

    DPO and ORPO train on the same pairs, as in the TLPO paper, and both are charged
    the sampling cost.
    """
    from tlpo import baselines

    costs_path = pairs_dir / "costs.json"
    if costs_path.is_file():
        return json.loads(costs_path.read_text(encoding="utf-8"))
    start = time.perf_counter()
    with CostMeter() as meter:
        baselines.prepare_preference_pairs(
            data.model_dir,
            data.train_rows,
            pairs_dir,
            seed=seed,
            max_new_tokens=budget.max_new_tokens,
            batch_size=PAIR_BATCH_SIZE,
        )
    costs = {"seconds": time.perf_counter() - start, **meter.as_dict()}
    _write_json_atomic(costs_path, costs)
    return costs


def train_method(
    method: str, data: BenchData, budget: BenchBudget, seed: int, run_dir: Path, *, tokenizer, base_model,
    clean: Sequence[dict], base_track_rpr: float,
) -> dict[str, Any]:
    """Train `method` from the base model into `run_dir / "model"`; return its costs and RPR curve."""
    from tlpo import baselines

    model_dir = run_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)  # a half-finished run from an interrupted benchmark
    pair_costs = {"seconds": 0.0, "forward_passes": 0, "forward_tokens": 0, "tokens_generated": 0}
    if method in ("dpo", "orpo"):
        pairs_dir = run_dir.parent / f"pairs-seed{seed}"
        pair_costs = shared_preference_pairs(data, budget, seed, pairs_dir)
        model_dir.mkdir(parents=True)
        for name in (baselines.PAIRS_FILENAME, baselines.PAIR_STATS_FILENAME):
            shutil.copyfile(pairs_dir / name, model_dir / name)
    meter = CostMeter()
    start = time.perf_counter()
    tracker = _make_tracker(
        tokenizer, data, budget, base_model=base_model, clean=clean, meter=meter, clock_start=start,
        offset=pair_costs["seconds"],
    )
    with meter:
        if method == "tlpo":
            log_history = _train_tlpo(data, budget, seed, model_dir, tracker)
        else:
            config = _trl_config(budget, method, seed)
            if method == "grpo":
                config.update(max_completion_length=budget.max_new_tokens, temperature=budget.temperature)
            options: dict[str, Any] = {"config": config, "callbacks": [tracker]}
            if method in ("dpo", "orpo"):
                options["pair_options"] = {"max_new_tokens": budget.max_new_tokens, "batch_size": PAIR_BATCH_SIZE}
            result = baselines.run_baseline(method, data.model_dir, data.train_rows, model_dir, **options)
            log_history = result.log_history
    train_seconds = time.perf_counter() - start - tracker.measuring_seconds
    losses = [row["loss"] for row in log_history if "loss" in row]
    curve = [{"step": 0, "seconds": 0.0, "rpr": base_track_rpr, "kl_clean": 0.0}, *tracker.points]
    counts = {key: value + pair_costs[key] for key, value in meter.as_dict().items()}
    return {
        "seconds": train_seconds + pair_costs["seconds"],
        "pair_seconds": pair_costs["seconds"],
        **counts,
        "steps": max((point["step"] for point in curve), default=0),
        "final_loss": losses[-1] if losses else None,
        "losses_finite": all(math.isfinite(loss) for loss in losses),
        "curve": curve,
        "time_to_final": time_to_final(curve, budget.time_tolerance),
    }


def _train_tlpo(data: BenchData, budget: BenchBudget, seed: int, model_dir: Path, tracker) -> list[dict]:
    from tlpo.config import TLPOConfig
    from tlpo.trainer import TLPOTrainer

    model, tokenizer = _load(data.model_dir)
    values = {
        **_optimizer_settings(budget, seed),
        "output_dir": str(model_dir),
        "max_new_tokens": budget.max_new_tokens,
        "temperature": budget.temperature,
        "report_to": "none",
    }
    config = TLPOConfig(**{**values, **budget.tlpo})
    dataset = [{"prompt": row["prompt"], "language": row["language"]} for row in data.train_rows]
    trainer = TLPOTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[tracker]
    )
    trainer.train()
    trainer.save_model(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return list(trainer.state.log_history)


# --------------------------------------------------------------------------------------
# The benchmark


def _write_json_atomic(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, value)


def machine_description() -> dict[str, Any]:
    description = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import transformers
        import trl

        description.update(transformers=transformers.__version__, trl=trl.__version__)
    except ImportError:  # pragma: no cover - both are dependencies
        pass
    return description


def run_bench(
    output_dir: str | os.PathLike,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    quick: bool = False,
    budget: BenchBudget | None = None,
    methods: Sequence[str] = METHODS,
    model_dir: str | os.PathLike | None = None,
    command: str | None = None,
    keep_models: bool = False,
) -> dict[str, Any]:
    """Run every method for every seed, write the reports and return `results.json`'s content.

    `budget` replaces `QUICK_BUDGET` or `FULL_BUDGET`. Runs already finished in
    `output_dir` are reused; a folder that contains runs made with another budget or
    model is rejected. Trained models are deleted after they are measured unless `keep_models`.
    """
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if "base" not in methods:
        methods = ["base", *methods]  # every other row is compared with the base model
    if budget is None:
        budget = QUICK_BUDGET if quick else FULL_BUDGET
    check_budget(budget)
    output_dir = Path(output_dir)
    if model_dir is None:
        from tlpo.organism import default_model_dir

        model_dir = default_model_dir()
    data = load_bench_data(Path(model_dir), budget)
    output_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "benchmark on %s: %d training prompts, %d held-out prompts, %d probe rows, seeds %s",
        data.model_dir, len(data.train_rows), len(data.eval_rows), len(data.probe_rows), list(seeds),
    )

    budget_path = output_dir / "budget.json"
    recorded = {"budget": asdict(budget), "model_dir": str(Path(model_dir).resolve())}
    if budget_path.is_file():
        previous = json.loads(budget_path.read_text(encoding="utf-8"))
        finished = list((output_dir / "runs").glob("*/metrics.json"))
        if previous != recorded and not finished:
            # Nothing finished under the old budget (for example a run that failed on a
            # bad setting), so start the folder over with the new one.
            logger.info("no finished runs in %s; starting it over with the new budget", output_dir)
            shutil.rmtree(output_dir / "runs", ignore_errors=True)
            (output_dir / "base.json").unlink(missing_ok=True)
            _write_json_atomic(budget_path, recorded)
        elif previous != recorded:
            raise ValueError(
                f"{output_dir} contains runs made with another budget or model ({budget_path}); "
                "use a new --output-dir, or delete that folder to start over"
            )
    else:
        _write_json_atomic(budget_path, recorded)

    base_model, tokenizer = _load(data.model_dir)
    base_path = output_dir / "base.json"
    if base_path.is_file():
        base = json.loads(base_path.read_text(encoding="utf-8"))
    else:
        clean = greedy_clean_responses(base_model, tokenizer, data.eval_rows, max_new_tokens=budget.max_new_tokens)
        track = measure_consistency(base_model, tokenizer, data.track_rows, budget, samples=budget.track_samples, seed=0)
        base = {"clean": clean, "track_rpr": track["rpr"]}
        _write_json_atomic(base_path, base)
    clean = base["clean"]
    probe = probe_sequences(tokenizer, data.probe_rows)

    runs: dict[str, dict[int, dict]] = {method: {} for method in methods}
    jobs = [(method, seed) for seed in seeds for method in methods]
    for method, seed in tqdm(jobs, desc="benchmark", unit="run"):
        run_dir = output_dir / "runs" / f"{method}-seed{seed}"
        metrics_path = run_dir / "metrics.json"
        if metrics_path.is_file():
            logger.info("reusing the finished run %s", metrics_path.parent)
            runs[method][seed] = json.loads(metrics_path.read_text(encoding="utf-8"))
            continue
        if method == "base" and runs["base"]:
            # The base model does not depend on the training seed, and every measurement
            # samples with the same evaluation seed.
            metrics = dict(next(iter(runs["base"].values())))
        elif method == "base":
            metrics = {
                **measure(base_model, tokenizer, data, budget, probe),
                "kl_clean": 0.0,
                "seconds": 0.0,
                "forward_passes": 0,
                "forward_tokens": 0,
                "tokens_generated": 0,
                "curve": [{"step": 0, "seconds": 0.0, "rpr": base["track_rpr"], "kl_clean": 0.0}],
                "time_to_final": 0.0,
            }
        else:
            logger.info("training %s with seed %d", method, seed)
            costs = train_method(
                method, data, budget, seed, run_dir, tokenizer=tokenizer, base_model=base_model, clean=clean,
                base_track_rpr=base["track_rpr"],
            )
            trained, _ = _load(run_dir / "model")
            metrics = {
                **measure(trained, tokenizer, data, budget, probe),
                "kl_clean": kl_from_base(trained, base_model, clean),
                **costs,
            }
            del trained
            if not keep_models:
                shutil.rmtree(run_dir / "model")
        metrics["clean_prompts"] = len(clean)
        _write_json_atomic(metrics_path, metrics)
        runs[method][seed] = metrics

    results = summarize(runs, seeds=seeds, quick=quick, budget=budget, data=data, command=command)
    _write_json_atomic(output_dir / "results.json", results)
    write_text_atomically(output_dir / "results.md", markdown_table(results))
    plot_results(results, output_dir / "results.png")
    return results


SUMMARY_KEYS = (
    "rpr", "lpr", "wpr", "capability", "probe_nll", "kl_clean", "seconds", "time_to_final",
    "tokens_generated", "forward_passes",
)


def _mean(values: list) -> float | None:
    values = [value for value in values if value is not None and not (isinstance(value, float) and math.isnan(value))]
    return statistics.fmean(values) if values else None


def _stdev(values: list) -> float | None:
    values = [value for value in values if value is not None and not (isinstance(value, float) and math.isnan(value))]
    return statistics.stdev(values) if len(values) > 1 else None


def summarize(runs, *, seeds, quick, budget, data, command) -> dict[str, Any]:
    """Average every method's metrics over seeds; keep the per-seed values beside them."""
    methods = {}
    base_capability = _mean([run["capability"] for run in runs["base"].values()])
    base_nll = _mean([run.get("probe_nll") for run in runs["base"].values()])
    for method, per_seed in runs.items():
        entry: dict[str, Any] = {}
        for key in SUMMARY_KEYS:
            values = [run.get(key) for run in per_seed.values()]
            entry[key] = _mean(values)
            entry[f"{key}_std"] = _stdev(values)
        entry["capability_drop"] = (
            base_capability - entry["capability"] if entry["capability"] is not None and base_capability is not None else None
        )
        entry["probe_nll_increase"] = (
            entry["probe_nll"] - base_nll if entry["probe_nll"] is not None and base_nll is not None else None
        )
        languages = sorted({language for run in per_seed.values() for language in run.get("per_language", {})})
        entry["rpr_per_language"] = {
            language: _mean([run["per_language"].get(language, {}).get("rpr") for run in per_seed.values()])
            for language in languages
        }
        entry["per_seed"] = {str(seed): run for seed, run in per_seed.items()}
        methods[method] = entry
    return {
        "command": command,
        "quick": quick,
        "seeds": list(seeds),
        "model_dir": str(data.model_dir),
        "train_prompts": len(data.train_rows),
        "eval_prompts": len(data.eval_rows),
        "probe_rows": len(data.probe_rows),
        "track_prompts": len(data.track_rows),
        "budget": asdict(budget),
        "machine": machine_description(),
        "methods": methods,
    }


def claim_checks(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """Check the TLPO paper's comparative claims on the means; return (claim, holds, numbers).

    Returns an empty list when TLPO or every baseline is missing from the results.
    """
    methods = results["methods"]
    tlpo = methods.get("tlpo")
    baselines = {name: entry for name, entry in methods.items() if name not in ("base", "tlpo")}
    if tlpo is None or not baselines:
        return []
    checks = []

    best_name = max(baselines, key=lambda name: baselines[name]["rpr"])
    best_rpr = baselines[best_name]["rpr"]
    checks.append(
        (
            "TLPO's RPR is at least the best baseline's minus 1 point",
            tlpo["rpr"] >= best_rpr - 1.0,
            f"TLPO {_format(tlpo['rpr'])}, best baseline {best_name} {_format(best_rpr)}",
        )
    )
    lower_is_better = (
        ("capability_drop", "capability drop (chrF)", 2),
        ("probe_nll_increase", "increase of the probe NLL", 4),
        ("kl_clean", "KL on never-confused prompts", 4),
    )
    for key, label, digits in lower_is_better:
        if tlpo.get(key) is None:
            continue
        measured = {name: entry[key] for name, entry in baselines.items() if entry.get(key) is not None}
        if not measured:
            continue
        lowest_name = min(measured, key=measured.get)
        checks.append(
            (
                f"TLPO's {label} is the lowest of all methods",
                tlpo[key] <= measured[lowest_name],
                f"TLPO {_format(tlpo[key], digits)}, lowest baseline {lowest_name} {_format(measured[lowest_name], digits)}",
            )
        )
    grpo = baselines.get("grpo")
    if grpo is not None and tlpo.get("time_to_final") is not None and grpo.get("time_to_final") is not None:
        checks.append(
            (
                "TLPO's wall time to its final RPR is at most half of GRPO's",
                tlpo["time_to_final"] <= grpo["time_to_final"] / 2,
                f"TLPO {_format(tlpo['time_to_final'], 0)} s, GRPO {_format(grpo['time_to_final'], 0)} s",
            )
        )
    return checks


def _format(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _with_std(entry: dict, key: str, digits: int = 1) -> str:
    text = _format(entry.get(key), digits)
    if entry.get(f"{key}_std") is not None:
        text += f" ± {_format(entry[f'{key}_std'], digits)}"
    return text


def markdown_table(results: dict[str, Any]) -> str:
    """Render the per-method means (± standard deviation over seeds) as Markdown tables."""
    methods = results["methods"]
    budget = results.get("budget", {})
    samples = budget.get("eval_samples", 1)
    seeds = results["seeds"]
    summary = "Mean ± standard deviation over seeds." if len(seeds) > 1 else "One seed, so no spread is shown."
    lines = []
    if results.get("command"):
        lines += [f"Command: `{results['command']}`. Model: `{results['model_dir']}`.", ""]
    lines += [
        f"Seeds: {', '.join(str(seed) for seed in seeds)}. Training prompts: {results['train_prompts']}, "
        f"held-out prompts: {results['eval_prompts']} ({samples} sample{'s' if samples != 1 else ''} each at "
        f"temperature {budget.get('temperature', 0.7)}), probe rows: {results['probe_rows']}. {summary}",
        "",
        "| method | RPR | LPR | WPR | capability (chrF) | capability drop | probe NLL | KL clean (nats/token) | "
        "train s | s to final RPR | tokens generated | forward passes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, entry in methods.items():
        lines.append(
            f"| {method} | {_with_std(entry, 'rpr')} | {_with_std(entry, 'lpr')} | {_with_std(entry, 'wpr')} | "
            f"{_with_std(entry, 'capability')} | {_format(entry['capability_drop'])} | "
            f"{_with_std(entry, 'probe_nll', 4)} | {_with_std(entry, 'kl_clean', 4)} | {_format(entry['seconds'], 0)} | "
            f"{_format(entry.get('time_to_final'), 0)} | "
            f"{_format(entry['tokens_generated'], 0)} | {_format(entry['forward_passes'], 0)} |"
        )
    languages = sorted({language for entry in methods.values() for language in entry["rpr_per_language"]})
    if languages:
        lines += [
            "",
            "RPR per language (mean over seeds):",
            "",
            "| method | " + " | ".join(languages) + " |",
            "| --- |" + " ---: |" * len(languages),
        ]
        for method, entry in methods.items():
            cells = [_format(entry["rpr_per_language"].get(language)) for language in languages]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    curves = {method: _mean_curve(entry) for method, entry in methods.items() if method != "base"}
    curves = {method: curve for method, curve in curves.items() if curve}
    if curves:
        longest = max(curves.values(), key=len)
        lines += [
            "",
            f"RPR on the {results.get('track_prompts', '?')} tracking prompts during training "
            "(mean over seeds; seconds of training, without the measurements):",
            "",
            "| method | " + " | ".join(f"step {point['step']}" for point in longest) + " |",
            "| --- |" + " ---: |" * len(longest),
        ]
        for method, curve in curves.items():
            cells = [f"{point['rpr']:.1f} ({point['seconds']:.0f} s)" for point in curve]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    matched = {method: entry for method, entry in methods.items() if method != "base"}
    if any(run.get("curve") for entry in matched.values() for run in entry["per_seed"].values()):
        lines += [
            "",
            "KL clean (nats/token) when RPR on the tracking prompts first reached each level "
            "(mean over the seeds that reached it, with their count):",
            "",
            "| method | " + " | ".join(f"RPR ≥ {level:g}" for level in MATCHED_RPR_LEVELS) + " |",
            "| --- |" + " ---: |" * len(MATCHED_RPR_LEVELS),
        ]
        seed_count = len(results["seeds"])
        for method, entry in matched.items():
            cells = []
            for level in MATCHED_RPR_LEVELS:
                values = [kl_at_rpr(run.get("curve") or [], level) for run in entry["per_seed"].values()]
                values = [value for value in values if value is not None]
                if values:
                    cells.append(f"{statistics.fmean(values):.4f} ({len(values)}/{seed_count})")
                else:
                    cells.append(f"not reached (0/{seed_count})")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    checks = claim_checks(results)
    if checks:
        lines += ["", "Claims of the TLPO paper, checked on the means (a gap smaller than the spread over seeds "
                  "is not a real difference):", ""]
        if results.get("quick"):
            lines += ["The quick budget is too small to rank the methods; run the full benchmark for that.", ""]
        for claim, holds, numbers in checks:
            lines.append(f"- {'yes' if holds else 'no'}: {claim} ({numbers})")
    return "\n".join(lines) + "\n"


# RPR levels at which the report compares the KL each method had paid to get there.
MATCHED_RPR_LEVELS = (85.0, 90.0, 95.0)


def _mean_curve(entry: dict) -> list[dict]:
    """Average the per-seed RPR curves point by point (steps are the same for every seed)."""
    curves = [run.get("curve") or [] for run in entry["per_seed"].values()]
    length = min((len(curve) for curve in curves), default=0)
    return [
        {
            "step": curves[0][index]["step"],
            "seconds": statistics.fmean(curve[index]["seconds"] for curve in curves),
            "rpr": statistics.fmean(curve[index]["rpr"] for curve in curves),
        }
        for index in range(length)
    ]


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Plot RPR against capability (one point per method and seed), and RPR during
    training against training seconds and against KL clean (one line per method and seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    markers = dict(zip(METHODS, "o*sD^v"))
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for method, entry in results["methods"].items():
        runs = list(entry["per_seed"].values())
        left.scatter(
            [run["capability"] for run in runs],
            [run["rpr"] for run in runs],
            label=method,
            marker=markers.get(method, "o"),
            color=colors.get(method),
            s=110 if method == "tlpo" else 50,
            alpha=0.8,
        )
        if method == "base":
            continue
        for index, run in enumerate(runs):
            curve = run.get("curve") or []
            style = dict(
                marker=markers.get(method, "o"),
                markersize=4,
                color=colors.get(method),
                alpha=0.8,
                linewidth=2.2 if method == "tlpo" else 1.2,
                label=method if index == 0 else None,
            )
            middle.plot([point["seconds"] for point in curve], [point["rpr"] for point in curve], **style)
            with_kl = [point for point in curve if point.get("kl_clean") is not None]
            right.plot([point["kl_clean"] for point in with_kl], [point["rpr"] for point in with_kl], **style)
    left.set_xlabel("capability (probe chrF, 0-100)")
    left.set_ylabel("RPR on held-out prompts (%)")
    left.set_title("Consistency against capability, one point per method and seed", fontsize=10)
    middle.set_xlabel("training seconds (measurements excluded)")
    middle.set_ylabel("RPR on the tracking prompts (%)")
    middle.set_title("RPR during training, one line per method and seed", fontsize=10)
    right.set_xlabel("KL from the base on never-confused prompts (nats/token)")
    right.set_ylabel("RPR on the tracking prompts (%)")
    right.set_title("RPR bought against KL during training", fontsize=10)
    right.set_xscale("symlog", linthresh=0.01)
    for axes in (left, middle, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, path)
