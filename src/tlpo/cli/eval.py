"""`tlpo eval`: consistency and capability of one model, or of a base model and a tuned one.

For each model the command

1. generates greedy completions for the consistency prompts (the LCB ``test_sets``
   folder given with ``--test-sets``, else the ``eval_prompts.jsonl`` that the embedded
   default model keeps in its folder) into ``<output-dir>/<label>_completions.csv``,
   resumably, as ``tlpo lcb generate`` does;
2. scores them with the LCB metric (LPR, WPR, LCPR; needs the LCB ``english_words.txt``)
   and with the script-rule detector (RPR, LPR, WPR);
3. measures capability with lm-evaluation-harness tasks (default: the shipped
   ``tlpo_ui_translation``) and, when the model folder has ``probe.jsonl``, with the
   probe's chrF and exact match (`tlpo.evaluation.evaluate_capability`);

then writes ``eval.json`` (every number, and the deltas model − base) and ``report.html``
(`tlpo.report_page`).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from pathlib import Path

from tlpo.cli import UserError

logger = logging.getLogger(__name__)

ORGANISM_TASK = "eval_prompts"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure language consistency and capability, before and after fine-tuning",
        description=(
            "Evaluate --model (and --base, to compare): greedy completions scored with the "
            "LCB metric and the script-rule detector, lm-eval accuracy on local tasks, and "
            "the default model's probe. Writes eval.json and a self-contained report.html "
            "to --output-dir. Nothing is downloaded."
        ),
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="saved Hugging Face causal LM with a chat template (default: the embedded default model)",
    )
    parser.add_argument("--base", metavar="PATH", help="the model before fine-tuning; adds a before/after comparison")

    parser.add_argument(
        "--test-sets",
        metavar="DIR",
        help="LCB test_sets folder for the consistency prompts (default: eval_prompts.jsonl "
        "in the model's or base's folder, as the embedded default model has)",
    )
    parser.add_argument("--task", dest="lcb_task", action="append", choices=("monolingual", "crosslingual"),
                        help="with --test-sets: keep only this LCB task; repeatable")
    parser.add_argument("--source", action="append", metavar="NAME", help="with --test-sets: keep only this LCB source; repeatable")
    parser.add_argument("--language", action="append", metavar="CODE", help="keep only this language; repeatable")

    parser.add_argument("--max-new-tokens", type=int, default=100, help="maximum new tokens per completion (default: 100)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call and lm-eval batch size (default: 16)")

    parser.add_argument(
        "--tasks",
        nargs="+",
        metavar="NAME",
        default=None,
        help="lm-eval task names (default: tlpo_ui_translation, shipped with tlpo); standard "
        "names such as mmmlu, gsm8k or bbh run when their data is available offline",
    )
    parser.add_argument("--task-path", action="append", metavar="PATH", default=[],
                        help="folder or YAML file of extra lm-eval task configs; repeatable")
    parser.add_argument("--limit", type=int, help="evaluate at most this many documents per lm-eval task")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples for the lm-eval tasks (default: each task's own)")
    parser.add_argument("--no-lm-eval", action="store_true", help="skip the lm-eval tasks")

    parser.add_argument("--word-list", metavar="PATH",
                        help="LCB english_words.txt (default: searched beside --test-sets and in $TLPO_LCB_DIR)")
    parser.add_argument("--samples", type=int, default=8, help="sample responses shown in the report (default: 8)")
    parser.add_argument("--output-dir", metavar="DIR", default="tlpo-eval", help="folder for eval.json, report.html and the completions (default: tlpo-eval)")

    parser.add_argument("--device", default="auto", help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="weight dtype (default: auto, the dtype saved with the model)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    parser.set_defaults(func=run_eval)


# --------------------------------------------------------------------------- prompts


def consistency_prompts(args, model_paths: list[str]):
    """Return the prompts to evaluate and the folder of the LCB data (None without --test-sets)."""
    from tlpo.lcb_generation import LCBPrompt, read_test_sets

    if args.test_sets:
        prompts = read_test_sets(args.test_sets, tasks=args.lcb_task, sources=args.source, languages=args.language)
        return prompts, Path(args.test_sets).resolve().parent
    if args.lcb_task or args.source:
        raise UserError("--task and --source select LCB prompts; pass --test-sets DIR with them")
    for path in model_paths:
        prompt_file = Path(path) / "eval_prompts.jsonl"
        if prompt_file.is_file():
            break
    else:
        raise UserError(
            "no consistency prompts: pass --test-sets with the LCB test_sets folder, or use a "
            f"model folder that contains eval_prompts.jsonl (searched {', '.join(model_paths)})"
        )
    prompts = []
    with prompt_file.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            row = json.loads(line)
            if args.language and row["language"] not in args.language:
                continue
            prompts.append(LCBPrompt(ORGANISM_TASK, prompt_file.parent.name, row["language"], index, row["prompt"]))
    if not prompts:
        raise UserError(f"{prompt_file} has no prompt for the chosen languages")
    return prompts, None


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------- one model


def score_completions(csv_path: Path, prompts, english_words, progress: bool) -> dict:
    """Score the completions of `prompts` in `csv_path` with the LCB metric and the script rules."""
    from tlpo import metrics

    requested = {prompt.key for prompt in prompts}
    rows = metrics.resolve_languages(metrics.read_completions(csv_path))
    completions = {}
    selected = []
    for row, record in zip(rows, _read_csv_keys(csv_path)):
        if record in requested:
            selected.append(row)
            completions[record] = row.completion

    result = {"completions": completions}
    if english_words is not None:
        table = metrics.score_lcb(selected, english_words=english_words, progress=progress)
        result["lcb_rows"] = [row.to_dict() for row in table]
    table = metrics.score_rules(selected, progress=progress)
    result["rules_rows"] = [row.to_dict() for row in table]
    return result


def _read_csv_keys(csv_path: Path) -> list[tuple]:
    import csv

    with csv_path.open(newline="", encoding="utf-8") as handle:
        return [(r["task"], r["source"], r["language"], int(r["id"])) for r in csv.DictReader(handle)]


def headline(result: dict) -> dict:
    """Pick the overall rows ("all", "all") of each task and the capability scores."""
    sections = {}
    for row in result.get("lcb_rows", []):
        if row["source"] == "all" and row["language"] == "all":
            sections[f"LCB {row['task']}"] = {"LPR": row["lpr"], "WPR": row["wpr"], "LCPR": row["lcpr"]}
    for row in result.get("rules_rows", []):
        if row["source"] == "all" and row["language"] == "all":
            sections[f"rules {row['task']}"] = {"RPR": row["rpr"], "LPR": row["lpr"], "WPR": row["wpr"]}
    capability = result.get("capability", {})
    if capability.get("lm_eval"):
        sections["lm-eval"] = {name: task["accuracy"] for name, task in capability["lm_eval"]["tasks"].items()}
    if capability.get("probe"):
        sections["probe"] = {"chrF": capability["probe"]["score"], "exact match": capability["probe"]["exact_match"]}
    return sections


def evaluate_one(label: str, path: str, prompts, args, english_words, probe_rows) -> dict:
    """Generate, score and measure capability for one model; return its result dictionary."""
    from tlpo.lcb_generation import generate_lcb_completions, greedy_generate_transformers, load_model_and_tokenizer

    progress = not args.no_progress
    logger.info("evaluating %s: %s", label, path)
    try:
        model, tokenizer = load_model_and_tokenizer(path, device=args.device, dtype=args.dtype)
    except FileNotFoundError as error:
        raise UserError(str(error)) from None

    csv_path = Path(args.output_dir) / f"{label}_completions.csv"
    name = Path(path.rstrip("/")).name
    try:
        generate_lcb_completions(
            prompts, csv_path, tokenizer=tokenizer,
            generate_batch=lambda ids, new_tokens: greedy_generate_transformers(model, tokenizer, ids, new_tokens),
            model_name=name, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=progress,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    result = {"path": path, "completions_file": str(csv_path)}
    result.update(score_completions(csv_path, prompts, english_words, progress))

    capability = {}
    if not args.no_lm_eval:
        from tlpo.capability import SHIPPED_TASK, evaluate_lm_eval

        try:
            capability["lm_eval"] = evaluate_lm_eval(
                model, tokenizer, tasks=args.tasks or [SHIPPED_TASK], include_paths=args.task_path,
                batch_size=args.batch_size, limit=args.limit, num_fewshot=args.num_fewshot,
            )
        except (ValueError, FileNotFoundError) as error:
            raise UserError(str(error)) from None
        except OSError as error:
            # datasets raises ConnectionError (an OSError) for a hub dataset that is not
            # cached while the hub is offline.
            raise UserError(
                f"lm-eval could not load the data of {', '.join(args.tasks or [SHIPPED_TASK])}: {error}. "
                "Without a network the task data must be on disk: see docs/EVALUATION.md for running "
                "standard tasks from local files, or pass --task-path with your own task"
            ) from None
    if probe_rows:
        from tlpo.evaluation import evaluate_capability

        capability["probe"] = evaluate_capability(
            model, tokenizer, probe_rows, batch_size=args.batch_size, progress=progress
        )
    result["capability"] = capability
    result["headline"] = headline(result)

    del model
    gc.collect()
    return result


# --------------------------------------------------------------------------- report


def pick_samples(prompts, results: dict, count: int) -> list[dict]:
    """Choose up to `count` prompts for the report, confused responses first.

    Each sample gets every model's response as a `tlpo.detection.ConfusionReport`.
    Languages the detector does not support are left out.
    """
    from tlpo.detection import detect

    labels = list(results)
    confused, clean = [], []
    for prompt in prompts:
        reports = {}
        for label in labels:
            text = results[label]["completions"].get(prompt.key)
            if text is None:
                break
            try:
                reports[label] = detect(text.split("\nQ:", 1)[0].strip(), prompt.language)
            except ValueError:
                break
        if len(reports) != len(labels):
            continue
        sample = {"task": prompt.task, "source": prompt.source, "language": prompt.language,
                  "id": prompt.index, "prompt": prompt.prompt, "responses": reports}
        (clean if all(r.passed for r in reports.values()) else confused).append(sample)
        if len(confused) >= count:
            break
    return (confused + clean)[:count]


def deltas(results: dict) -> dict:
    """Return model − base for every headline number present in both."""
    before, after = (results[label]["headline"] for label in results)
    difference = {}
    for section, metrics in after.items():
        for metric, value in metrics.items():
            old = before.get(section, {}).get(metric)
            if value is not None and old is not None:
                difference.setdefault(section, {})[metric] = value - old
    return difference


def run_eval(args: argparse.Namespace) -> int:
    from tlpo.cli.lcb import write_atomically
    from tlpo.cli.lcb_generate import resolve_model_path
    from tlpo.report_page import render_report_page

    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise UserError("--max-new-tokens and --batch-size must be at least 1")
    model_path = resolve_model_path(args.model)
    models = {"base": args.base, "model": model_path} if args.base else {"model": model_path}
    for label, path in models.items():
        if not Path(path).is_dir():
            raise UserError(f"--{label} folder not found: {path}. Pass the folder that save_pretrained wrote.")

    try:
        prompts, lcb_dir = consistency_prompts(args, list(models.values())[::-1])
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None

    from tlpo import metrics

    english_words = None
    try:
        word_list = metrics.find_word_list(args.word_list, lcb_dir=lcb_dir)
        english_words = metrics.load_english_words(word_list)
    except metrics.WordListNotFoundError:
        if args.word_list or lcb_dir is not None:
            raise UserError(f"LCB English word list not found: {args.word_list or Path(lcb_dir) / 'english_words.txt'}; pass it with --word-list") from None
        logger.info("no LCB english_words.txt found, so only the script-rule metric is computed")

    probe_rows = None
    for path in list(models.values())[::-1]:
        if (Path(path) / "probe.jsonl").is_file():
            probe_rows = _read_jsonl(Path(path) / "probe.jsonl")
            if args.language:
                probe_rows = [row for row in probe_rows if row["language"] in args.language]
            break

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {label: evaluate_one(label, path, prompts, args, english_words, probe_rows) for label, path in models.items()}

    document = {
        "settings": {
            "prompts": len(prompts),
            "test_sets": args.test_sets,
            "max_new_tokens": args.max_new_tokens,
            "decoding": "greedy",
            "lm_eval_tasks": None if args.no_lm_eval else (args.tasks or ["tlpo_ui_translation"]),
        },
        "models": {label: {key: value for key, value in result.items() if key != "completions"} for label, result in results.items()},
    }
    if len(results) == 2:
        document["deltas"] = deltas(results)
    json_path = output_dir / "eval.json"
    write_atomically(json_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")

    samples = pick_samples(prompts, results, args.samples)
    page = render_report_page(document, samples, title="tlpo eval: " + " vs ".join(Path(p).name for p in models.values()))
    report_path = output_dir / "report.html"
    write_atomically(report_path, page)

    for label, result in results.items():
        summary = ", ".join(
            f"{section} {metric} {value:.2f}"
            for section, values in result["headline"].items()
            for metric, value in values.items()
            if value is not None
        )
        print(f"{label}: {summary}")
    if "deltas" in document:
        print("delta: " + ", ".join(f"{s} {m} {v:+.2f}" for s, d in document["deltas"].items() for m, v in d.items()))
    print(f"wrote {json_path} and {report_path}")
    return 0
