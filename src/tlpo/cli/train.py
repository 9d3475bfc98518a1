"""`tlpo train`: fine-tune a causal LM with TLPO on a JSONL file of prompts.

Every `TLPOConfig` field is also a flag (`--learning_rate` or `--learning-rate`), and a
YAML file given with `--config` uses the same names as keys. Values come from, in
increasing priority: the `TLPOConfig` defaults, the YAML file, the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from tlpo.cli import UserError, read_yaml_mapping

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16", "auto")


def config_fields() -> list[str]:
    from tlpo.config import TLPOConfig

    return [field.name for field in dataclasses.fields(TLPOConfig) if field.init]


def config_flags_parser() -> argparse.ArgumentParser:
    """Return a parent parser with one flag per `TLPOConfig` field, each defaulting to "not given"."""
    from transformers import HfArgumentParser

    from tlpo.config import TLPOConfig

    config_parser = HfArgumentParser(TLPOConfig, add_help=False)
    # Unset flags stay out of the namespace, so that YAML values are only overridden by
    # flags the user actually gave.
    for action in config_parser._actions:
        action.default = argparse.SUPPRESS
    return config_parser


def build_config(args: argparse.Namespace, defaults: dict | None = None):
    """Return the `TLPOConfig` from `defaults`, `args.config` (YAML) and the flags, in rising priority.

    Raises `UserError` for an unreadable YAML file, unknown keys, invalid values, no
    output folder, or a `resume_from_checkpoint` folder that does not exist.
    """
    from tlpo.config import TLPOConfig

    values = dict(defaults or {})
    if getattr(args, "config", None):
        path = Path(args.config)
        loaded = read_yaml_mapping(path, "TLPOConfig")
        unknown = sorted(set(loaded) - set(config_fields()))
        if unknown:
            raise UserError(
                f"unknown keys in {path}: {', '.join(unknown)}; keys must be TLPOConfig field names "
                "(see `tlpo train --help`)"
            )
        values.update(loaded)
    values.update({name: getattr(args, name) for name in config_fields() if hasattr(args, name)})
    if not values.get("output_dir"):
        raise UserError("missing --output-dir: give the folder for checkpoints and the trained model")
    checkpoint = values.get("resume_from_checkpoint")
    if checkpoint and not Path(checkpoint).is_dir():
        raise UserError(
            f"checkpoint folder not found: {checkpoint}; give a checkpoint-N folder that an earlier "
            "run wrote into its --output-dir"
        )
    try:
        return TLPOConfig(**values)
    except (ValueError, TypeError) as error:
        raise UserError(str(error)) from None


def load_model_and_tokenizer(model_name: str, *, trust_remote_code: bool = False, dtype: str = "float32"):
    """Load a causal LM and its tokenizer from a local folder or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(model_name, trust_remote_code=trust_remote_code, dtype=torch_dtype)
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot load model {model_name!r}: {error}. Give a local model folder or a hub id that is "
            "cached (add --trust-remote-code only for models whose code you trust)"
        ) from None
    return model, tokenizer


def lora_config(args: argparse.Namespace):
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def make_trainer(model, tokenizer, config, prompts_path: Path, peft_config=None):
    """Validate the prompts against the model and return a `TLPOTrainer`; bad input raises `UserError`."""
    from tlpo.data import PromptDataError, read_prompts_jsonl
    from tlpo.trainer import TLPOTrainer

    try:
        rows = read_prompts_jsonl(prompts_path)
        dataset = [{"prompt": row.messages, "language": row.language} for row in rows]
        return TLPOTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config
        )
    except PromptDataError as error:
        raise UserError(str(error)) from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="model folder or hub id of a causal LM with a chat template; default: the embedded "
        "default model (built into $TLPO_HOME on first use)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own Python code to run when loading it (off by default)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="dtype the weights are loaded in; TLPO's reference setting is full fine-tuning in float32",
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        parents=[config_flags_parser()],
        usage="tlpo train [--model PATH_OR_ID] [--prompts FILE.jsonl] --output-dir DIR "
        "[--config FILE.yaml] [--lora] [--FIELD VALUE ...]",
        help="fine-tune a model with TLPO on prompts tagged with their target language",
        description="Fine-tune a causal LM with Token-Level Policy Optimization: sample responses, find "
        "the first wrong-language token of each, and train only at those positions.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--prompts",
        type=Path,
        help="JSONL file with one {\"prompt\": text or chat messages, \"language\": code} per line; "
        "default with no --model: the default model's train_prompts.jsonl",
    )
    parser.add_argument("--config", type=Path, help="YAML file of TLPOConfig fields; flags override it")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter on all linear layers")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (with --lora)")
    parser.add_argument("--lora-alpha", type=int, default=32, help="LoRA scaling numerator alpha (with --lora)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model is None:
        from tlpo.cli.demo import DEMO_SETTINGS

        # The reference defaults are sized for 8B models (512 new tokens do not even fit
        # the embedded model's 512-token context), so the embedded model trains with the
        # settings `tlpo demo` uses for it, under any YAML values and flags given.
        config = build_config(args, defaults=DEMO_SETTINGS)
    else:
        config = build_config(args)

    if args.model is None:
        from tlpo.organism import default_model_dir

        model_dir = default_model_dir()
        model_name = str(model_dir)
        prompts = args.prompts or model_dir / "train_prompts.jsonl"
    else:
        model_name = args.model
        if args.prompts is None:
            raise UserError("missing --prompts: with --model, give the JSONL file of training prompts")
        prompts = args.prompts

    model, tokenizer = load_model_and_tokenizer(model_name, trust_remote_code=args.trust_remote_code, dtype=args.dtype)
    trainer = make_trainer(model, tokenizer, config, prompts, peft_config=lora_config(args) if args.lora else None)
    logger.info("training %s on %d prompts from %s", model_name, len(trainer.prompt_ids), prompts)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model(config.output_dir)
    if trainer.is_world_process_zero():
        print(f"saved the trained model to {config.output_dir}")
    return 0
