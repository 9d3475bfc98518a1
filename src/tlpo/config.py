"""`TLPOConfig`: the training arguments of `TLPOTrainer`."""

from dataclasses import dataclass, field

from transformers import TrainingArguments

DETECTOR_METHODS = ("auto", "script", "word-lid")


@dataclass
class TLPOConfig(TrainingArguments):
    r"""
    Configuration of [`TLPOTrainer`]: every `transformers.TrainingArguments` field plus the
    knobs of Token-Level Policy Optimization.

    The TLPO defaults are those of the reference implementation of Choo et al., "TLPO:
    Token-Level Policy Optimization for Mitigating Language Confusion in Large Language
    Models" (ACL 2026, arXiv 2604.26553).

    Batching: each optimizer step rolls out `per_device_train_batch_size` prompts per
    process (times `gradient_accumulation_steps`), `num_generations` responses each, mines
    one confusion point per confused response and queues its `num_candidates` candidates.
    The step then trains on at most `items_per_step` (position, candidate) items from the
    front of that queue. Items left over stay queued for the next step, where the clipped
    ratio corrects for the policy having moved since they were sampled.

    Parameters that override the `TrainingArguments` defaults:
        learning_rate (`float`, defaults to `5e-7`)
        lr_scheduler_type (defaults to `"cosine_with_min_lr"`)
        lr_scheduler_kwargs (defaults to `{"min_lr": 5e-8}`): cosine decay to 5e-8.
        warmup_steps (defaults to `0.1`): linear warm-up over the first 10% of steps.
        weight_decay (defaults to `0.1`)
        adam_beta2 (defaults to `0.95`)
        num_train_epochs (defaults to `1.0`)
        per_device_train_batch_size (defaults to `2`): prompts per step and process. With
            8 responses per prompt and about half of them confused, 2 prompts mine about 8
            confusion points, which is 128 items at K=16.
        logging_steps (defaults to `1`): TLPO metrics are logged at every step.
        remove_unused_columns (defaults to `False`): the trainer needs the `prompt` and
            `language` columns, which no model forward accepts.
    """

    # Overridden TrainingArguments defaults.
    learning_rate: float = field(default=5e-7, metadata={"help": "Peak learning rate of AdamW."})
    lr_scheduler_type: str = field(
        default="cosine_with_min_lr",
        metadata={"help": "Learning-rate schedule after warm-up (a transformers SchedulerType name)."},
    )
    lr_scheduler_kwargs: dict | str | None = field(
        default_factory=lambda: {"min_lr": 5e-8},
        metadata={"help": "Extra arguments of the schedule, as a dict or a JSON string; min_lr is the floor of the cosine decay."},
    )
    warmup_steps: float = field(
        default=0.1,
        metadata={"help": "Linear warm-up: a number of steps, or a float in [0, 1) for a share of all steps."},
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training prompts."})
    per_device_train_batch_size: int = field(
        default=2, metadata={"help": "Prompts rolled out per optimizer step on each process."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log metrics every this many optimizer steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: TLPO reads the prompt and language columns itself."}
    )

    # Rollout.
    num_generations: int = field(
        default=8, metadata={"help": "Responses sampled per prompt in each rollout (G)."}
    )
    temperature: float = field(
        default=0.6, metadata={"help": "Sampling temperature of the rollouts; 0 samples greedily."}
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Maximum number of new tokens per sampled response."})
    rollout_batch_size: int = field(
        default=64,
        metadata={"help": "Maximum number of sequences passed to one generate call during rollouts."},
    )

    # Confusion detection.
    detector_method: str = field(
        default="auto",
        metadata={
            "help": "Confusion detector: 'script' (Unicode-script rules), 'word-lid' (word-level language ID) "
            "or 'auto' (script rules for languages with their own script, word-level ID for Latin-script ones).",
            "choices": list(DETECTOR_METHODS),
        },
    )
    ignore_english: bool = field(
        default=True,
        metadata={
            "help": "Ignore all ASCII text when detecting confusion, so that only foreign non-ASCII scripts count "
            "(the reference default). Turn it off when English itself is the unwanted language."
        },
    )

    # Candidate exploration.
    num_candidates: int = field(
        default=16, metadata={"help": "Top-K next tokens explored at each confusion point (K)."}
    )
    extension_tokens: int = field(
        default=3,
        metadata={"help": "Greedy tokens appended after each candidate before its text is checked for confusion."},
    )

    # Objective and update.
    clip_epsilon: float = field(
        default=0.2, metadata={"help": "Clip range of the probability ratio: [1 - eps, 1 + eps]."}
    )
    beta: float = field(
        default=0.04,
        metadata={"help": "Weight of the k3 KL penalty against the reference model; 0 needs no reference model."},
    )
    items_per_step: int = field(
        default=128,
        metadata={
            "help": "Maximum (position, candidate) items one optimizer step trains on, per process. Whole "
            "confusion points are taken, so the count is rounded down to a multiple of num_candidates (at least one point)."
        },
    )
    ref_model_sync_steps: int = field(
        default=0,
        metadata={
            "help": "Copy the policy's weights into the reference model every this many optimizer steps; 0 keeps "
            "the initial policy as the reference. Not available with LoRA, where the reference is the base model."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if self.num_generations < 1:
            problems.append(f"num_generations must be at least 1, got {self.num_generations}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.rollout_batch_size < 1:
            problems.append(f"rollout_batch_size must be at least 1, got {self.rollout_batch_size}")
        if self.num_candidates < 2:
            problems.append(f"num_candidates must be at least 2 for a non-zero advantage, got {self.num_candidates}")
        if self.extension_tokens < 0:
            problems.append(f"extension_tokens must be >= 0, got {self.extension_tokens}")
        if not 0 <= self.clip_epsilon < 1:
            problems.append(f"clip_epsilon must be in [0, 1), got {self.clip_epsilon}")
        if self.beta < 0:
            problems.append(f"beta must be >= 0, got {self.beta}")
        if self.items_per_step < 1:
            problems.append(f"items_per_step must be at least 1, got {self.items_per_step}")
        if self.ref_model_sync_steps < 0:
            problems.append(f"ref_model_sync_steps must be >= 0, got {self.ref_model_sync_steps}")
        if self.detector_method not in DETECTOR_METHODS:
            problems.append(f"detector_method must be one of {', '.join(DETECTOR_METHODS)}, got {self.detector_method!r}")
        if self.remove_unused_columns:
            problems.append("remove_unused_columns must be False: TLPO reads the prompt and language columns")
        if problems:
            raise ValueError("invalid TLPOConfig: " + "; ".join(problems))

    @property
    def points_per_step(self) -> int:
        """Confusion points one optimizer step trains on, per process."""
        return max(1, self.items_per_step // self.num_candidates)
