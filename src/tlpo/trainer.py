"""`TLPOTrainer`: Token-Level Policy Optimization as a `transformers.Trainer`.

One optimizer step, on each process:

1. Roll out: sample `num_generations` responses for each prompt of the step's batch
   (`tlpo.rollout`), keeping the exact prompt + response token ids.
2. Mine: run the confusion detector on each decoded response. For a confused response,
   map the first wrong-language character to the token `c` that contains it, working
   from the generated ids (`tlpo.alignment`). Explore the policy's top-K next tokens at
   the update position `c - 1` and reward each with the detector (`tlpo.exploration`).
   The point is queued with the candidates' advantages and their log-probabilities
   under the sampling policy and the reference model.
3. Update: take up to `items_per_step` (position, candidate) items from the front of the
   queue and minimise the clipped surrogate plus k3 KL at those positions only
   (`tlpo.losses`), with one forward pass per prefix for all K candidates.

The loss is the mean over all items trained on in the step across all processes: each
process scales its local mean by its share of the global item count, and DDP's
gradient averaging does the rest. A process that has nothing to train on still runs
one forward pass, multiplied by zero, so that DDP's gradient all-reduce does not hang.

Everything random in a step is seeded from (`seed`, global step, prompt index, sample
index), and exploration is greedy. A run therefore does not depend on how prompts are
split over processes. A run resumed from a checkpoint, which also stores the queue,
reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset as TorchDataset
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from tlpo.alignment import char_to_token, decode_with_spans
from tlpo.config import TLPOConfig
from tlpo.data import PromptDataError, context_length, encode_prompts, validate_rows
from tlpo.detection import detect
from tlpo.exploration import explore_batch
from tlpo.losses import candidate_logprobs, tlpo_loss
from tlpo.rollout import sample_responses, sequence_seed

logger = logging.getLogger(__name__)

STATE_FILE = "tlpo_state_rank{rank}.pt"
REFERENCE_FILE = "tlpo_reference_model.pt"

# Per-step sums gathered across processes, in this order, for the logged metrics.
_SUM_KEYS = (
    "responses",
    "responses_passed",
    "response_tokens",
    "points",
    "candidates",
    "candidates_positive",
    "points_zero_advantage",
    "items",
    "advantage_abs_sum",
    "kl_sum",
    "clipped",
    "queued_points",
)


@dataclass
class ConfusionPoint:
    """A mined update position with its K candidates, ready for the loss.

    `prefix_ids` is the sampled prompt + response up to and including the update
    position, so the logits at its last index choose the next token. All tensors are on
    the CPU; the K-sized ones are float32 except `candidate_ids`.
    """

    prefix_ids: torch.Tensor  # (L,)
    candidate_ids: torch.Tensor  # (K,)
    rewards: torch.Tensor  # (K,) in {+1, -1}
    advantages: torch.Tensor  # (K,)
    logp_old: torch.Tensor  # (K,) log-probs under the policy that sampled
    logp_ref: torch.Tensor  # (K,) log-probs under the reference model (zeros when beta == 0)

    def to_state(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class _PromptIndexDataset(TorchDataset):
    """The Trainer's dataloader yields prompt indices; the prompts themselves are pre-encoded."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"prompt_index": index}


def _collate_prompt_indices(rows: list[dict]) -> dict:
    return {"prompt_index": torch.tensor([row["prompt_index"] for row in rows], dtype=torch.long)}


def _dataset_rows(dataset) -> list[dict]:
    if dataset is None:
        raise ValueError("TLPOTrainer needs a train_dataset with 'prompt' and 'language' columns")
    if hasattr(dataset, "column_names") and hasattr(dataset, "to_list"):
        return dataset.to_list()
    return [dict(row) for row in dataset]


def _pad_right(sequences: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = sequence
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask


class TLPOTrainer(Trainer):
    """Trainer for Token-Level Policy Optimization (see the module docstring for one step).

    Args:
        model: a causal LM, or a model id or path to load with `AutoModelForCausalLM`.
        args: a `TLPOConfig`; defaults to one with the reference hyper-parameters and
            `output_dir="tlpo-output"`.
        train_dataset: rows with `prompt` (text or chat messages) and `language` (any
            code `tlpo.languages.normalize_language` accepts); a `datasets.Dataset` or a
            list of dicts. Every row is validated and encoded here, so bad input fails
            before training starts.
        processing_class: the tokenizer; must be a fast tokenizer with a chat template.
            Loaded from the model's name or path when None.
        peft_config: a `peft` config (for example `LoraConfig`). The model is wrapped with
            it, and the reference model is the same model with the adapter disabled.
        ref_model: the frozen reference model. When None, a frozen copy of the initial
            policy (or, with `peft_config`, the base model) is used. Not needed when
            `args.beta == 0`.
        callbacks, optimizers: as for `transformers.Trainer`.
    """

    _tag_names = ["tlpo"]

    def __init__(
        self,
        model: PreTrainedModel | str,
        args: TLPOConfig | None = None,
        train_dataset=None,
        processing_class=None,
        peft_config=None,
        ref_model: PreTrainedModel | None = None,
        callbacks=None,
        optimizers=(None, None),
    ):
        if args is None:
            args = TLPOConfig(output_dir="tlpo-output")
        if not isinstance(args, TLPOConfig):
            raise TypeError(f"args must be a TLPOConfig, got {type(args).__name__}")
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model)
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)

        # Validate and encode every prompt before anything else is built.
        rows = validate_rows(_dataset_rows(train_dataset), where="train_dataset")
        self.prompt_ids = encode_prompts(
            processing_class,
            rows,
            max_new_tokens=args.max_new_tokens + args.extension_tokens,
            max_length=context_length(model),
            where="train_dataset",
        )
        self.prompt_languages = [row.language for row in rows]
        # Confusion points are mapped to tokens through the tokenizer's decoder; fail now,
        # not at the first confused rollout, when that decoder is not supported.
        try:
            decode_with_spans(processing_class, self.prompt_ids[0])
        except ValueError as error:
            raise PromptDataError(f"the tokenizer cannot be used for TLPO: {error}") from None

        if peft_config is not None:
            if ref_model is not None:
                raise ValueError("pass either peft_config or ref_model: with LoRA the reference is the base model")
            if args.ref_model_sync_steps:
                raise ValueError(
                    "ref_model_sync_steps is not available with peft_config: the reference is the base model "
                    "with the adapter disabled, which does not change"
                )
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self.uses_adapter_reference = ref_model is None and (peft_config is not None or hasattr(model, "disable_adapter"))

        if args.beta == 0 or self.uses_adapter_reference:
            self.ref_model = None
        elif ref_model is not None:
            self.ref_model = ref_model
        else:
            self.ref_model = copy.deepcopy(model)
        if self.ref_model is not None:
            self.ref_model.eval()
            self.ref_model.requires_grad_(False)

        super().__init__(
            model=model,
            args=args,
            data_collator=_collate_prompt_indices,
            train_dataset=_PromptIndexDataset(len(rows)),
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)

        self.queue: list[ConfusionPoint] = []
        self._step_sums: dict[str, float] = defaultdict(float)
        self._logged_metrics: dict[str, list[float]] = defaultdict(list)
        self._ref_synced_at_step = 0
        self._pad_id = (
            processing_class.pad_token_id if processing_class.pad_token_id is not None else processing_class.eos_token_id
        ) or 0

    # ------------------------------------------------------------------ rollout and mining

    def _policy(self):
        return self.accelerator.unwrap_model(self.model)

    def _progress(self, total: int, description: str):
        return tqdm(
            total=total,
            desc=description,
            leave=False,
            disable=self.args.disable_tqdm or not self.is_local_process_zero(),
        )

    def _detector_options(self) -> dict:
        return {"method": self.args.detector_method, "ignore_english": self.args.ignore_english}

    @torch.no_grad()
    def _candidate_logprobs_no_grad(self, model, prefixes, candidate_ids, adapter_disabled=False) -> torch.Tensor:
        """Return the (N, K) log-probabilities of the candidates under `model`, computed in chunks."""
        device = self.accelerator.device
        chunk = max(1, self.args.rollout_batch_size // 4)
        results = []
        was_training = model.training
        model.eval()
        context = model.disable_adapter() if adapter_disabled else nullcontext()
        try:
            with context:
                for start in range(0, len(prefixes), chunk):
                    part = prefixes[start : start + chunk]
                    input_ids, attention_mask = _pad_right(part, self._pad_id)
                    positions = torch.tensor([len(prefix) - 1 for prefix in part])
                    logp = candidate_logprobs(
                        model,
                        input_ids.to(device),
                        attention_mask.to(device),
                        positions.to(device),
                        candidate_ids[start : start + chunk].to(device),
                    )
                    results.append(logp.float().cpu())
        finally:
            model.train(was_training)
        return torch.cat(results)

    def _roll_out_and_mine(self, prompt_indices: list[int]) -> None:
        """Roll out the prompts, mine their confusion points and append them to the queue."""
        args = self.args
        policy = self._policy()
        tokenizer = self.processing_class
        step = self.state.global_step

        jobs = [(index, sample) for index in prompt_indices for sample in range(args.num_generations)]
        with self._progress(len(jobs), f"rollout step {step + 1}") as bar:
            responses = sample_responses(
                policy,
                tokenizer,
                [self.prompt_ids[index] for index, _ in jobs],
                [sequence_seed(args.seed, step, index, sample) for index, sample in jobs],
                temperature=args.temperature,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.rollout_batch_size,
                progress=bar,
            )

        found = []  # (prompt index, context ids, response start, confusion token index)
        for (index, _), response in zip(jobs, responses):
            text, spans = decode_with_spans(tokenizer, response)
            report = detect(text, self.prompt_languages[index], **self._detector_options())
            self._step_sums["responses"] += 1
            self._step_sums["response_tokens"] += len(response)
            if report.passed:
                self._step_sums["responses_passed"] += 1
            if report.first_confusion is None:
                continue
            prompt = self.prompt_ids[index]
            confusion_token = len(prompt) + char_to_token(spans, report.first_confusion)
            found.append((index, prompt + response, len(prompt), confusion_token))

        if not found:
            return
        with self._progress(len(found), f"explore step {step + 1}") as bar:
            results = []
            chunk = max(1, args.rollout_batch_size // args.num_candidates)
            for first in range(0, len(found), chunk):
                part = found[first : first + chunk]
                results.extend(
                    explore_batch(
                        policy,
                        tokenizer,
                        [torch.tensor(context, dtype=torch.long) for _, context, _, _ in part],
                        [response_start for _, _, response_start, _ in part],
                        [confusion_token for _, _, _, confusion_token in part],
                        [self.prompt_languages[index] for index, _, _, _ in part],
                        k=args.num_candidates,
                        extension_tokens=args.extension_tokens,
                        detector_options=self._detector_options(),
                        batch_size=chunk,
                    )
                )
                bar.update(len(part))

        prefixes = [torch.tensor(context[:confusion_token], dtype=torch.long) for _, context, _, confusion_token in found]
        candidates = torch.stack([result.candidate_ids.long().cpu() for result in results])
        if args.beta == 0:
            logp_ref = torch.zeros(candidates.shape)
        elif self.uses_adapter_reference:
            logp_ref = self._candidate_logprobs_no_grad(policy, prefixes, candidates, adapter_disabled=True)
        else:
            logp_ref = self._candidate_logprobs_no_grad(self.ref_model, prefixes, candidates)

        for row, (prefix, result) in enumerate(zip(prefixes, results)):
            rewards = result.rewards.float().cpu()
            point_advantages = result.advantages.float().cpu()
            self._step_sums["points"] += 1
            self._step_sums["candidates"] += len(rewards)
            self._step_sums["candidates_positive"] += float((rewards > 0).sum())
            self._step_sums["points_zero_advantage"] += float(bool((point_advantages == 0).all()))
            # The exploration pass computed the candidates' log-probabilities under the
            # policy that sampled, which is what the ratio needs as logp_old.
            self.queue.append(
                ConfusionPoint(
                    prefix_ids=prefix,
                    candidate_ids=candidates[row],
                    rewards=rewards,
                    advantages=point_advantages,
                    logp_old=result.logprobs.float().cpu(),
                    logp_ref=logp_ref[row],
                )
            )

    # ------------------------------------------------------------------ update

    def _maybe_sync_ref_model(self) -> None:
        every = self.args.ref_model_sync_steps
        step = self.state.global_step
        if self.ref_model is None or not every or step == 0 or step % every or step == self._ref_synced_at_step:
            return
        self.ref_model.load_state_dict(self._policy().state_dict())
        self._ref_synced_at_step = step
        logger.info("copied the policy into the reference model at step %d", step)

    def _update_loss(self, model, points: list[ConfusionPoint]) -> torch.Tensor:
        """Return this process's share of the step loss over `points` (see the module docstring)."""
        device = self.accelerator.device
        local_items = sum(len(point.candidate_ids) for point in points)
        global_items = int(self.accelerator.reduce(torch.tensor(local_items, device=device), reduction="sum").item())

        if not points:
            # Nothing to train on here: a zero loss that still runs DDP's forward pass.
            dummy = torch.tensor(self.prompt_ids[0][:1], dtype=torch.long, device=device)[None]
            logits = model(input_ids=dummy, attention_mask=torch.ones_like(dummy)).logits
            return logits.sum() * 0.0

        input_ids, attention_mask = _pad_right([point.prefix_ids for point in points], self._pad_id)
        positions = torch.tensor([len(point.prefix_ids) - 1 for point in points])
        candidate_ids = torch.stack([point.candidate_ids for point in points]).to(device)
        logp_old = torch.stack([point.logp_old for point in points]).to(device)
        logp_ref = torch.stack([point.logp_ref for point in points]).to(device)
        advantages = torch.stack([point.advantages for point in points]).to(device)

        logp = candidate_logprobs(
            model, input_ids.to(device), attention_mask.to(device), positions.to(device), candidate_ids
        )  # (N, K)
        # Dividing the local sum by global_items / num_processes makes DDP's average of
        # the processes' gradients the gradient of the mean over all items of the step.
        loss, stats = tlpo_loss(
            logp,
            logp_old,
            logp_ref,
            advantages,
            clip_epsilon=self.args.clip_epsilon,
            beta=self.args.beta,
            num_items=global_items / self.accelerator.num_processes,
        )
        self._step_sums["items"] += local_items
        self._step_sums["advantage_abs_sum"] += float(advantages.abs().sum())
        self._step_sums["kl_sum"] += float(stats["kl_mean"]) * local_items
        self._step_sums["clipped"] += float(stats["clip_fraction"]) * local_items
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """Roll out the batch's prompts, queue their confusion points, and at the last
        micro-batch of an optimizer step train on the front of the queue."""
        self._maybe_sync_ref_model()
        self._roll_out_and_mine(inputs["prompt_index"].tolist())

        if not self.accelerator.sync_gradients:
            # Gradient accumulation: more prompts are rolled out before the update.
            return torch.zeros((), device=self.args.device)

        # NOTE: the queue has no size limit. When steps keep mining more points than
        # items_per_step takes, it grows and its points age (see update/queued_points).
        points = self.queue[: self.args.points_per_step]
        del self.queue[: self.args.points_per_step]
        self._step_sums["queued_points"] += len(self.queue)

        model.train()
        # NOTE: all points of the step go through one forward and backward pass. Lower
        # items_per_step when that does not fit in memory.
        with self.compute_loss_context_manager():
            loss = self._update_loss(model, points)
        self.accelerator.backward(loss)
        self._record_step_metrics()
        return loss.detach()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        raise NotImplementedError("TLPOTrainer computes its loss in training_step; evaluation is not supported")

    # ------------------------------------------------------------------ logging

    def _record_step_metrics(self) -> None:
        sums = torch.tensor([self._step_sums[key] for key in _SUM_KEYS], dtype=torch.float64, device=self.args.device)
        sums = dict(zip(_SUM_KEYS, self.accelerator.reduce(sums, reduction="sum").tolist()))
        self._step_sums.clear()

        def ratio(numerator: str, denominator: str) -> float:
            return sums[numerator] / sums[denominator] if sums[denominator] else 0.0

        metrics = self._logged_metrics
        metrics["rollout/pass_rate"].append(100.0 * ratio("responses_passed", "responses"))
        metrics["rollout/response_length"].append(ratio("response_tokens", "responses"))
        metrics["confusion/points"].append(sums["points"])
        metrics["confusion/positive_candidates"].append(100.0 * ratio("candidates_positive", "candidates"))
        metrics["confusion/zero_advantage_points"].append(sums["points_zero_advantage"])
        metrics["update/items"].append(sums["items"])
        metrics["update/queued_points"].append(sums["queued_points"])
        metrics["advantage/abs_mean"].append(ratio("advantage_abs_sum", "items"))
        metrics["kl/mean"].append(ratio("kl_sum", "items"))
        metrics["clip_ratio"].append(ratio("clipped", "items"))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the TLPO metrics, averaged over the steps since the last log, to `logs`."""
        if self._logged_metrics and "train_runtime" not in logs:
            for key, values in self._logged_metrics.items():
                logs[key] = sum(values) / len(values)
            self._logged_metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        state = {"queue": [point.to_state() for point in self.queue], "ref_synced_at_step": self._ref_synced_at_step}
        _save_atomically(state, os.path.join(folder, STATE_FILE.format(rank=self.args.process_index)))
        if self.ref_model is not None and self.args.ref_model_sync_steps and self.is_world_process_zero():
            _save_atomically(self.ref_model.state_dict(), os.path.join(folder, REFERENCE_FILE))

    def _load_tlpo_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, STATE_FILE.format(rank=self.args.process_index))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: {checkpoint} was not written by TLPOTrainer with "
                f"{self.args.world_size} process(es); resume with the same number of processes"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.queue = [ConfusionPoint(**point) for point in state["queue"]]
        self._ref_synced_at_step = state["ref_synced_at_step"]
        reference_path = os.path.join(checkpoint, REFERENCE_FILE)
        if self.ref_model is not None and os.path.isfile(reference_path):
            self.ref_model.load_state_dict(torch.load(reference_path, map_location="cpu", weights_only=True))

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Train; `resume_from_checkpoint` also restores the queue of mined confusion points."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint found in {self.args.output_dir} to resume from")
        self.queue = []
        if resume_from_checkpoint:
            self._load_tlpo_state(resume_from_checkpoint)
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint or None,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )


def _save_atomically(obj, path: str) -> None:
    temporary = f"{path}.tmp"
    torch.save(obj, temporary)
    os.replace(temporary, path)
