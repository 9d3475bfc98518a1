"""Downstream accuracy with lm-evaluation-harness (lm-eval), on local task files only.

Language-confusion fixes are judged on two axes: the response language, and whether the
model still solves tasks. This module runs lm-eval tasks on a model that is either in
memory (a ``transformers`` model and its tokenizer, wrapped in lm-eval's ``HFLM``) or
saved in a folder. Nothing is downloaded: ``HF_DATASETS_OFFLINE`` and ``HF_HUB_OFFLINE``
are set before lm-eval loads any data, so a task runs only when its data is on disk
(task files with ``dataset_path: json`` and local ``data_files``, a ``custom_dataset``
function, or a dataset already in the Hugging Face cache).

The package ships one small task, ``tlpo_ui_translation`` (in ``tlpo/data/lm_eval_tasks``):
40 multiple-choice items that ask for the translation of an English UI string, in the
prompt format of the embedded default model. lm-eval's standard tasks (``mmmlu``,
``gsm8k``, ``gsm8k_platinum``, ``bbh``, ...) are found by name, too; see
docs/EVALUATION.md for running them from local data.

Checked with lm-eval 0.4.13.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

SHIPPED_TASK = "tlpo_ui_translation"
# Metrics reported per task, in this order of preference; each is in [0, 1] in lm-eval's output.
ACCURACY_METRICS = ("acc", "exact_match", "acc_norm")


def shipped_tasks_dir() -> Path:
    """Return the folder of the lm-eval task files that ship with tlpo."""
    return Path(__file__).parent / "data" / "lm_eval_tasks"


def force_offline() -> None:
    """Set the Hugging Face offline switches for this process.

    ``datasets`` and ``huggingface_hub`` read them when they are first imported, so this
    must run before lm-eval (which imports both) is imported.
    """
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"


def _task_manager(tasks: Sequence[str], include_paths: Sequence[str | os.PathLike]):
    """Build an lm-eval TaskManager that indexes the shipped tasks and `include_paths`.

    lm-eval's own task index (hundreds of YAML files) is scanned only when a requested
    task is not among the local ones, because the scan takes seconds.
    """
    from lm_eval.tasks import TaskManager

    paths = [str(shipped_tasks_dir())]
    for path in include_paths:
        if not Path(path).exists():
            raise FileNotFoundError(
                f"lm-eval task path not found: {path}. Pass a folder or YAML file of task configs."
            )
        paths.append(str(path))
    local = TaskManager(include_path=paths, include_defaults=False)
    if all(name in local.all_tasks for name in tasks):
        return local
    manager = TaskManager(include_path=paths, include_defaults=True)
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        raise ValueError(
            f"unknown lm-eval task(s) {', '.join(unknown)}: not in lm-eval's task list nor in "
            f"{', '.join(paths)}. Check the name with `lm-eval ls tasks`, or pass the folder "
            "of your task YAML with --task-path."
        )
    return manager


def _accuracy(metrics: dict) -> tuple[str, float, float | None] | None:
    """Pick the headline metric of one task's lm-eval results: (name, value, stderr)."""
    for name in ACCURACY_METRICS:
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if metric != name or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{name}_stderr,{filter_name}")
            if not isinstance(stderr, (int, float)) or math.isnan(stderr):
                stderr = None
            return key, float(value), stderr
    return None


def evaluate_lm_eval(
    model,
    tokenizer=None,
    *,
    tasks: Sequence[str] = (SHIPPED_TASK,),
    include_paths: Sequence[str | os.PathLike] = (),
    batch_size: int = 8,
    limit: int | None = None,
    num_fewshot: int | None = None,
    apply_chat_template: bool = True,
    device: str | None = None,
    seed: int = 0,
) -> dict:
    """Run lm-eval tasks on a model and return accuracies in percent.

    `model` is a ``transformers`` model with `tokenizer`, or the path of a saved model
    folder (then `tokenizer` is ignored). `include_paths` are folders or YAML files of
    extra task configs. With `apply_chat_template` (the default, since tlpo targets chat
    models) each prompt is put in a user turn of the tokenizer's chat template.

    Returns ``{"score", "tasks": {name: {"metric", "accuracy", "stderr", "samples"}},
    "lm_eval_version"}``: ``accuracy`` and ``stderr`` in percent, ``score`` the mean
    accuracy over the requested tasks. Raises ``ValueError`` for an unknown task and
    ``FileNotFoundError`` for a missing task path or model folder.
    """
    force_offline()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    if not tasks:
        raise ValueError("no lm-eval task requested; pass at least one task name.")
    manager = _task_manager(list(tasks), include_paths)

    if isinstance(model, (str, os.PathLike)):
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model folder not found: {model}")
        lm = HFLM(pretrained=str(model), batch_size=batch_size, device=device)
    else:
        if tokenizer is None:
            raise ValueError("an in-memory model needs its tokenizer: pass tokenizer=...")
        options = {"device": device} if device else {}
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **options)

    if apply_chat_template and not getattr(lm.tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template; pass apply_chat_template=False (CLI: "
            "--no-chat-template) to evaluate a base model on plain prompts."
        )
    was_training = getattr(lm.model, "training", False)
    try:
        output = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            task_manager=manager,
            num_fewshot=num_fewshot,
            limit=limit,
            apply_chat_template=apply_chat_template,
            log_samples=False,
            bootstrap_iters=1000,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    finally:
        lm.model.train(was_training)

    results = {}
    for name, metrics in output["results"].items():
        picked = _accuracy(metrics)
        if picked is None:
            continue
        key, value, stderr = picked
        results[name] = {
            "metric": key,
            "accuracy": 100.0 * value,
            "stderr": None if stderr is None else 100.0 * stderr,
            "samples": output.get("n-samples", {}).get(name, {}).get("effective"),
        }
    requested = [results[name]["accuracy"] for name in tasks if name in results]
    return {
        "score": sum(requested) / len(requested) if requested else None,
        "tasks": results,
        "lm_eval_version": getattr(lm_eval, "__version__", None),
    }
