"""`tlpo baseline {sft,dpo,orpo,grpo}`: train a sequence-level baseline with TRL.

Runs one of the functions of `tlpo.baselines` on a JSONL prompt file and saves the model
(or the LoRA adapter with `--lora`) and the tokenizer to `--output-dir`. Hyper-parameters
come from TRL's config class of the method: a YAML file given with `--config` maps its
field names to values, and the flags below override the file. Under
`accelerate launch -m tlpo baseline ...` the TRL trainers run on every process.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tlpo.cli import UserError, read_yaml_mapping

logger = logging.getLogger(__name__)

METHOD_HELP = {
    "sft": "supervised fine-tuning on the rows' reference responses",
    "dpo": "DPO on clean/confused pairs sampled from the model (16 samples per prompt, temperature 0.7)",
    "orpo": "ORPO on the same pairs as DPO",
    "grpo": "GRPO with reward 1 for a response without language confusion, else 0",
}

# Flags that map one to one onto a TRL config field, with the methods whose config has it.
CONFIG_FLAGS = {
    "learning_rate": (float, "peak learning rate", ("sft", "dpo", "orpo", "grpo")),
    "max_steps": (int, "number of optimizer steps; overrides --num-train-epochs when > 0", ("sft", "dpo", "orpo", "grpo")),
    "num_train_epochs": (float, "passes over the training data", ("sft", "dpo", "orpo", "grpo")),
    "per_device_train_batch_size": (int, "examples per device and step (GRPO: completions)", ("sft", "dpo", "orpo", "grpo")),
    "gradient_accumulation_steps": (int, "micro-batches accumulated per optimizer step", ("sft", "dpo", "orpo", "grpo")),
    "seed": (int, "random seed of training and of the DPO/ORPO pair sampling", ("sft", "dpo", "orpo", "grpo")),
    "beta": (float, "DPO: KL strength; ORPO: odds-ratio weight; GRPO: KL coefficient", ("dpo", "orpo", "grpo")),
    "max_length": (int, "maximum tokens of prompt plus response in a training example", ("sft", "dpo", "orpo")),
    "num_generations": (int, "GRPO completions sampled per prompt", ("grpo",)),
    "max_completion_length": (int, "GRPO maximum new tokens per completion", ("grpo",)),
    "temperature": (float, "GRPO sampling temperature", ("grpo",)),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "baseline",
        help="train an SFT, DPO, ORPO or GRPO baseline on the same prompts as `tlpo train`",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("method", choices=list(METHOD_HELP), help="; ".join(f"{k}: {v}" for k, v in METHOD_HELP.items()))
    parser.add_argument(
        "--model",
        help="Hugging Face model folder or hub id with a chat template (default: the embedded default model, "
        "built on first use)",
    )
    parser.add_argument(
        "--prompts",
        type=Path,
        help="JSONL file of rows with 'prompt', 'language' and, for SFT, 'reference' "
        "(default: train_prompts.jsonl of the model folder)",
    )

    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the trained model and logs")
    parser.add_argument("--config", type=Path, help="YAML file mapping TRL config field names to values")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter in place of the full model")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default: 16)")
    parser.add_argument("--lora-alpha", type=int, default=32, help="LoRA scaling alpha (default: 32)")
    parser.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout (default: 0.05)")
    parser.add_argument(
        "--lora-target-modules",
        nargs="+",
        default=["all-linear"],
        help="module names to adapt, or all-linear (default: all-linear)",
    )

    parser.add_argument(
        "--detector",
        choices=["auto", "script", "word-lid"],
        default="auto",
        help="confusion detector of the GRPO reward and the DPO/ORPO pairs (default: auto)",
    )
    parser.add_argument(
        "--count-english",
        action="store_true",
        help="count English words as confusion in own-script languages (default: ignore all ASCII)",
    )
    parser.add_argument(
        "--pair-max-new-tokens",
        type=int,
        default=256,
        help="DPO/ORPO: maximum new tokens of each of the 16 samples per prompt (default: 256)",
    )
    parser.add_argument(
        "--pair-batch-size", type=int, default=64, help="DPO/ORPO: sequences per generate call (default: 64)"
    )

    group = parser.add_argument_group("TRL config fields (override --config; default: TRL's default)")
    for name, (kind, text, methods) in CONFIG_FLAGS.items():
        suffix = "" if len(methods) == 4 else f" [{', '.join(methods)}]"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=text + suffix)
    parser.set_defaults(func=run)


def read_rows(path: Path) -> list[dict]:
    """Read a JSONL prompt file into dicts, keeping every field (SFT needs `reference`)."""
    from tlpo.data import PromptDataError, read_jsonl

    try:
        return read_jsonl(path)
    except PromptDataError as error:
        raise UserError(str(error)) from None


def read_config_file(path: Path | None) -> dict:
    return read_yaml_mapping(path, "TRL config") if path is not None else {}


def resolve_model_and_prompts(model: str | None, prompts: Path | None) -> tuple[str, Path]:
    """Fill in the embedded default model and its training prompts where not given."""
    if model is None:
        from tlpo.organism import default_model_dir

        model = str(default_model_dir())
    if prompts is None:
        candidate = Path(model) / "train_prompts.jsonl"
        if not candidate.is_file():
            raise UserError(f"--prompts is required: {model} has no train_prompts.jsonl")
        prompts = candidate
    return model, prompts


def build_lora_config(args):
    from peft import LoraConfig

    targets = args.lora_target_modules
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )


def run(args) -> int:
    from tlpo import baselines

    model, prompts = resolve_model_and_prompts(args.model, args.prompts)
    rows = read_rows(prompts)
    config = read_config_file(args.config)
    for name, (_kind, _text, methods) in CONFIG_FLAGS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if args.method not in methods:
            raise UserError(f"--{name.replace('_', '-')} does not apply to {args.method}; it is for {', '.join(methods)}")
        config[name] = value

    options = {
        "config": config,
        "peft_config": build_lora_config(args) if args.lora else None,
        "detector_options": {"method": args.detector, "ignore_english": not args.count_english},
        "pair_options": {"max_new_tokens": args.pair_max_new_tokens, "batch_size": args.pair_batch_size},
    }
    try:
        result = baselines.run_baseline(args.method, model, rows, args.output_dir, **options)
    except ValueError as error:
        raise UserError(str(error)) from None

    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    losses = result.losses
    summary = f"{args.method}: {len(losses)} logged steps on {result.num_train_examples} examples"
    if losses:
        summary += f", loss {losses[0]:.4g} -> {losses[-1]:.4g}"
    summary += f", {result.train_seconds:.1f} s training"
    if result.pair_stats:
        stats = result.pair_stats
        summary += (
            f"; pairs from {stats['prompts']} prompts: {stats['pairs']} kept, "
            f"{stats['dropped_all_clean']} all clean, {stats['dropped_all_confused']} all confused"
        )
    print(summary)
    print(f"saved to {result.output_dir}")
    return 0
