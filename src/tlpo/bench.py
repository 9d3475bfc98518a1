"""`tlpo bench`: TLPO and the sequence-level baselines side by side on one model.

For each seed, every method fine-tunes the same model on the same training prompts:
TLPO (`tlpo.trainer.TLPOTrainer`) and SFT, DPO, ORPO and GRPO (`tlpo.baselines`). The
untrained base model is the sixth row. Each result is then measured the same way:

- consistency: RPR/LPR/WPR (script-rule detector, `tlpo.detection`) of greedy responses
  to the held-out prompts, overall and per language;
- capability: the score of `tlpo.evaluation.evaluate_capability` on the probe set;
- `kl_clean`: how far behaviour that needed no fix moved. The held-out prompts whose
  greedy base response passes the detector are fed, with that base response, to the
  base model and to the trained model (teacher forcing). The value is the mean over all
  response tokens of KL(trained || base) of the two next-token distributions, in nats;
- cost: wall time of training (for DPO/ORPO including the pair sampling), tokens
  generated and forward passes of the causal LMs during training (see `CostMeter`).

Each (method, seed) writes `runs/<method>-seed<seed>/metrics.json` when it finishes, and a
rerun with the same output folder skips the runs that have one, so an interrupted
benchmark resumes. The summary is `results.json`, `results.md` and `results.png`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tlpo.fileio import write_json_atomically

logger = logging.getLogger(__name__)

METHODS = ("base", "tlpo", "sft", "dpo", "orpo", "grpo")
TRAINED_METHODS = METHODS[1:]


# --------------------------------------------------------------------------------------
# Budgets


@dataclass
class BenchBudget:
    """Data sizes and per-method training settings of one benchmark run.

    The settings are sized for the embedded default model (about 1.3 M parameters),
    which needs far larger learning rates than the 8 B models of the TLPO paper. Every
    method trains on the same prompts, once each.
    """

    train_prompts_per_language: int | None  # None: all of train_prompts.jsonl
    eval_prompts_per_language: int | None  # None: all of eval_prompts.jsonl
    probe_prompts_per_language: int | None  # None: all of probe.jsonl
    max_new_tokens: int  # for evaluation, rollouts and pair sampling
    learning_rate: float
    epochs: float
    tlpo: dict[str, Any] = field(default_factory=dict)  # TLPOConfig overrides
    sft: dict[str, Any] = field(default_factory=dict)  # SFTConfig overrides
    dpo: dict[str, Any] = field(default_factory=dict)  # DPOConfig overrides
    orpo: dict[str, Any] = field(default_factory=dict)  # ORPOConfig overrides
    grpo: dict[str, Any] = field(default_factory=dict)  # GRPOConfig overrides


# Settings every TRL baseline shares on this model: full fine-tuning in fp32, no
# activation checkpointing (the model is small) and no intermediate checkpoints.
_TRL_COMMON = {"gradient_checkpointing": False, "save_strategy": "no", "logging_steps": 1}

# Every method takes 8 training prompts per optimizer step, so SFT, TLPO and GRPO make
# the same number of steps at the same learning rate. DPO and ORPO make fewer, because
# prompts whose 16 samples are all clean or all confused give no pair.
_PROMPTS_PER_STEP = 8


def _method_settings(num_generations: int) -> dict[str, dict[str, Any]]:
    return {
        "tlpo": {
            "per_device_train_batch_size": _PROMPTS_PER_STEP,
            "num_generations": num_generations,
            "items_per_step": 256,
            "logging_steps": 1,
        },
        "sft": {"per_device_train_batch_size": _PROMPTS_PER_STEP, "max_length": 256},
        "dpo": {"per_device_train_batch_size": _PROMPTS_PER_STEP, "max_length": 256, "beta": 0.1},
        "orpo": {"per_device_train_batch_size": _PROMPTS_PER_STEP, "max_length": 256, "beta": 0.1},
        # GRPO's batch size counts completions: 8 prompts times num_generations.
        "grpo": {
            "per_device_train_batch_size": _PROMPTS_PER_STEP * num_generations,
            "num_generations": num_generations,
            "temperature": 0.6,
            "beta": 0.04,
        },
    }


# NOTE: sized for two shared CPU cores, so only 8 held-out prompts per language are
# scored and one of them moves RPR by 12.5 points in that language. On a faster machine
# pass a larger budget to `run_bench` for finer steps.
FULL_BUDGET = BenchBudget(
    train_prompts_per_language=4,
    eval_prompts_per_language=8,
    probe_prompts_per_language=8,
    max_new_tokens=64,
    learning_rate=3e-4,
    epochs=2.0,
    **_method_settings(num_generations=8),
)

QUICK_BUDGET = BenchBudget(
    train_prompts_per_language=2,
    eval_prompts_per_language=4,
    probe_prompts_per_language=4,
    max_new_tokens=64,
    learning_rate=3e-4,
    epochs=1.0,
    **_method_settings(num_generations=4),
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

    def _hook(self, module, args, kwargs, output) -> None:
        from transformers import GenerationMixin

        if not isinstance(module, GenerationMixin):
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


def load_bench_data(model_dir: Path, budget: BenchBudget) -> BenchData:
    for name in ("train_prompts.jsonl", "eval_prompts.jsonl", "probe.jsonl"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(
                f"{model_dir / name} not found; the benchmark needs a model folder with "
                "train_prompts.jsonl, eval_prompts.jsonl and probe.jsonl, like the embedded default model"
            )
    return BenchData(
        model_dir=model_dir,
        train_rows=take_per_language(_read_jsonl(model_dir / "train_prompts.jsonl"), budget.train_prompts_per_language),
        eval_rows=take_per_language(_read_jsonl(model_dir / "eval_prompts.jsonl"), budget.eval_prompts_per_language),
        probe_rows=take_per_language(_read_jsonl(model_dir / "probe.jsonl"), budget.probe_prompts_per_language),
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


@torch.no_grad()
def kl_from_base(policy, base, sequences: Sequence[dict], *, batch_size: int = 32) -> float:
    """Mean per-token KL(policy || base) over the response tokens of `sequences`, in nats.

    Both models read the same prompt + response ids. The next-token distributions at
    the positions that predict response tokens are compared over the full vocabulary.
    """
    total, count = 0.0, 0
    policy.eval()
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
        device = next(policy.parameters()).device
        policy_logp = torch.log_softmax(
            policy(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits.float(), dim=-1
        )
        base_logp = torch.log_softmax(
            base(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits.float(), dim=-1
        )
        mask = response_mask.to(device)
        per_token = (policy_logp.exp() * (policy_logp - base_logp)).sum(-1)
        total += float(per_token[mask].sum())
        count += int(mask.sum())
    return total / count if count else float("nan")


def measure(model, tokenizer, data: BenchData, budget: BenchBudget) -> dict[str, Any]:
    """Consistency on the held-out prompts and capability on the probe set."""
    from tlpo.evaluation import evaluate_capability, evaluate_consistency

    consistency = evaluate_consistency(
        model, tokenizer, data.eval_rows, temperature=0.0, num_samples=1, max_new_tokens=budget.max_new_tokens
    )
    capability = evaluate_capability(model, tokenizer, data.probe_rows, max_new_tokens=budget.max_new_tokens)
    return {
        "rpr": consistency["rpr"],
        "lpr": consistency.get("lpr"),
        "wpr": consistency.get("wpr"),
        "per_language": consistency.get("per_language", {}),
        "capability": capability["score"],
        "capability_per_language": capability.get("per_language", {}),
    }


# --------------------------------------------------------------------------------------
# Training


def _trl_config(budget: BenchBudget, method: str, seed: int) -> dict[str, Any]:
    return {
        **_TRL_COMMON,
        "learning_rate": budget.learning_rate,
        "num_train_epochs": budget.epochs,
        "seed": seed,
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


def train_method(method: str, data: BenchData, budget: BenchBudget, seed: int, run_dir: Path) -> dict[str, Any]:
    """Train `method` from the base model into `run_dir / "model"`; return its costs."""
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
    start = time.perf_counter()
    with CostMeter() as meter:
        if method == "tlpo":
            log_history = _train_tlpo(data, budget, seed, model_dir)
        else:
            config = _trl_config(budget, method, seed)
            if method == "grpo":
                config["max_completion_length"] = budget.max_new_tokens
            options: dict[str, Any] = {"config": config}
            if method in ("dpo", "orpo"):
                options["pair_options"] = {"max_new_tokens": budget.max_new_tokens, "batch_size": PAIR_BATCH_SIZE}
            result = baselines.run_baseline(method, data.model_dir, data.train_rows, model_dir, **options)
            log_history = result.log_history
    train_seconds = time.perf_counter() - start
    losses = [row["loss"] for row in log_history if "loss" in row]
    counts = {key: value + pair_costs[key] for key, value in meter.as_dict().items()}
    return {
        "seconds": train_seconds + pair_costs["seconds"],
        "pair_seconds": pair_costs["seconds"],
        **counts,
        "final_loss": losses[-1] if losses else None,
        "losses_finite": all(math.isfinite(loss) for loss in losses),
    }


def _train_tlpo(data: BenchData, budget: BenchBudget, seed: int, model_dir: Path) -> list[dict]:
    from tlpo.config import TLPOConfig
    from tlpo.trainer import TLPOTrainer

    model, tokenizer = _load(data.model_dir)
    config = TLPOConfig(
        output_dir=str(model_dir),
        learning_rate=budget.learning_rate,
        lr_scheduler_kwargs={"min_lr": budget.learning_rate / 10},
        num_train_epochs=budget.epochs,
        max_new_tokens=budget.max_new_tokens,
        seed=seed,
        save_strategy="no",
        report_to="none",
        **budget.tlpo,
    )
    dataset = [{"prompt": row["prompt"], "language": row["language"]} for row in data.train_rows]
    trainer = TLPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
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
) -> dict[str, Any]:
    """Run every method for every seed, write the reports and return `results.json`'s content.

    `budget` replaces `QUICK_BUDGET` or `FULL_BUDGET`. Runs already finished in
    `output_dir` are reused as they are, so change the output folder with the budget.
    """
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if "base" not in methods:
        methods = ["base", *methods]  # every other row is compared with the base model
    if budget is None:
        budget = QUICK_BUDGET if quick else FULL_BUDGET
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if model_dir is None:
        from tlpo.organism import default_model_dir

        model_dir = default_model_dir()
    data = load_bench_data(Path(model_dir), budget)
    logger.info(
        "benchmark on %s: %d training prompts, %d held-out prompts, %d probe rows, seeds %s",
        data.model_dir, len(data.train_rows), len(data.eval_rows), len(data.probe_rows), list(seeds),
    )

    base_model, tokenizer = _load(data.model_dir)
    clean_path = output_dir / "base_clean_responses.json"
    if clean_path.is_file():
        clean = json.loads(clean_path.read_text(encoding="utf-8"))
    else:
        clean = greedy_clean_responses(base_model, tokenizer, data.eval_rows, max_new_tokens=budget.max_new_tokens)
        _write_json_atomic(clean_path, clean)

    runs: dict[str, dict[int, dict]] = {method: {} for method in methods}
    jobs = [(method, seed) for seed in seeds for method in methods]
    for method, seed in tqdm(jobs, desc="benchmark", unit="run"):
        run_dir = output_dir / "runs" / f"{method}-seed{seed}"
        metrics_path = run_dir / "metrics.json"
        if metrics_path.is_file():
            runs[method][seed] = json.loads(metrics_path.read_text(encoding="utf-8"))
            continue
        if method == "base" and runs["base"]:
            # The base model does not depend on the seed: greedy evaluation is deterministic.
            metrics = dict(next(iter(runs["base"].values())))
        elif method == "base":
            metrics = {**measure(base_model, tokenizer, data, budget), "kl_clean": 0.0, "seconds": 0.0,
                       "forward_passes": 0, "forward_tokens": 0, "tokens_generated": 0}
        else:
            logger.info("training %s with seed %d", method, seed)
            costs = train_method(method, data, budget, seed, run_dir)
            trained, _ = _load(run_dir / "model")
            metrics = {
                **measure(trained, tokenizer, data, budget),
                "kl_clean": kl_from_base(trained, base_model, clean),
                **costs,
            }
            del trained
        metrics["clean_prompts"] = len(clean)
        _write_json_atomic(metrics_path, metrics)
        runs[method][seed] = metrics

    results = summarize(runs, seeds=seeds, quick=quick, budget=budget, data=data, command=command)
    _write_json_atomic(output_dir / "results.json", results)
    table = markdown_table(results)
    temporary = output_dir / ".results.md.tmp"
    temporary.write_text(table, encoding="utf-8")
    os.replace(temporary, output_dir / "results.md")
    plot_results(results, output_dir / "results.png")
    return results


SUMMARY_KEYS = ("rpr", "lpr", "wpr", "capability", "kl_clean", "seconds", "tokens_generated", "forward_passes")


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
    for method, per_seed in runs.items():
        entry: dict[str, Any] = {}
        for key in SUMMARY_KEYS:
            values = [run.get(key) for run in per_seed.values()]
            entry[key] = _mean(values)
            entry[f"{key}_std"] = _stdev(values)
        entry["capability_drop"] = (
            base_capability - entry["capability"] if entry["capability"] is not None and base_capability is not None else None
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
    for key, label in (("capability_drop", "capability drop"), ("kl_clean", "KL on never-confused prompts")):
        lowest_name = min(baselines, key=lambda name: baselines[name][key])
        lowest = baselines[lowest_name][key]
        checks.append(
            (
                f"TLPO's {label} is the lowest of all methods",
                tlpo[key] <= lowest,
                f"TLPO {_format(tlpo[key], 4)}, lowest baseline {lowest_name} {_format(lowest, 4)}",
            )
        )
    if "grpo" in baselines:
        checks.append(
            (
                "TLPO's training time is at most half of GRPO's",
                tlpo["seconds"] <= baselines["grpo"]["seconds"] / 2,
                f"TLPO {_format(tlpo['seconds'], 0)} s, GRPO {_format(baselines['grpo']['seconds'], 0)} s",
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
    lines = [
        f"Seeds: {', '.join(str(seed) for seed in results['seeds'])}. Training prompts: {results['train_prompts']}, "
        f"held-out prompts: {results['eval_prompts']}, probe rows: {results['probe_rows']}. "
        "Mean ± standard deviation over seeds.",
        "",
        "| method | RPR | LPR | WPR | capability | capability drop | KL clean (nats/token) | train s | "
        "tokens generated | forward passes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, entry in methods.items():
        lines.append(
            f"| {method} | {_with_std(entry, 'rpr')} | {_with_std(entry, 'lpr')} | {_with_std(entry, 'wpr')} | "
            f"{_with_std(entry, 'capability')} | {_format(entry['capability_drop'])} | "
            f"{_with_std(entry, 'kl_clean', 4)} | {_format(entry['seconds'], 0)} | "
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
    checks = claim_checks(results)
    if checks:
        lines += ["", "Claims of the TLPO paper, checked on the means:", ""]
        for claim, holds, numbers in checks:
            lines.append(f"- {'yes' if holds else 'no'}: {claim} ({numbers})")
    return "\n".join(lines) + "\n"


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Plot RPR against capability, one point per method and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    markers = dict(zip(METHODS, "o*sD^v"))
    for method, entry in results["methods"].items():
        runs = list(entry["per_seed"].values())
        axes.scatter(
            [run["capability"] for run in runs],
            [run["rpr"] for run in runs],
            label=method,
            marker=markers.get(method, "o"),
            s=90 if method == "tlpo" else 50,
            alpha=0.8,
        )
    axes.set_xlabel("capability (probe score, 0-100)")
    axes.set_ylabel("consistency (RPR on held-out prompts, %)")
    axes.set_title("Language consistency against capability, one point per method and seed")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)
