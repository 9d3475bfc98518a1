"""Generate Language Confusion Benchmark (LCB) completions and write them as LCB CSV.

The LCB release (Marchisio et al. 2024, arXiv 2406.20052) keeps its prompts in
``test_sets/<task>/<source>/<language>.csv``, where ``<task>`` is ``monolingual`` or
``crosslingual``. Every file has the columns ``prompt,source,language``; the
cross-lingual ones add ``location,phrasing``. This module reads that layout, applies the
model's chat template, decodes greedily and writes the columns
``id,model,completion,task,source,language`` that the LCB metric script (and
``tlpo lcb score``) reads. ``id`` is the row index inside its test-set file, as in the
completions that the LCB authors released.

Writing is resumable. Prompts are sorted by token length and cut into fixed batches, so
the same command always forms the same batches, and a batch always yields the same
greedy completions. After each batch the new rows are appended to the output file,
flushed and fsync'ed. A rerun reads the rows already there (dropping a record torn by
an interruption), regenerates only the batches that still miss rows, and, once every
row is present, rewrites the file atomically in test-set order. An interrupted run
followed by a rerun therefore gives the same file as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tlpo.fileio import write_text_atomically

logger = logging.getLogger(__name__)

TASKS = ("monolingual", "crosslingual")
PROMPT_COLUMNS = ("prompt", "source", "language")
OUTPUT_COLUMNS = ("id", "model", "completion", "task", "source", "language")

# The LCB repository README states that its released completions were generated with at most
# 100 new tokens per prompt.
DEFAULT_MAX_NEW_TOKENS = 100
BACKENDS = ("transformers", "vllm")
# Padded tokens per batch (prompts x (longest prompt + new tokens)). Batches of long
# prompts get fewer prompts, so that a few very long ones (the cross-lingual
# complex_prompts reach about 11 K tokens with a small BPE vocabulary) do not multiply
# the attention memory by the batch size.
DEFAULT_MAX_BATCH_TOKENS = 32768


@dataclass(frozen=True)
class LCBPrompt:
    """One LCB prompt with the fields that identify its completion row."""

    task: str  # "monolingual" or "crosslingual"
    source: str  # the file's `source` column, e.g. "native_prompts" in folder "native"
    language: str  # the file name without ".csv", e.g. "ko"
    index: int  # row index inside the test-set file; written as the LCB `id`
    prompt: str

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.task, self.source, self.language, self.index)


# --------------------------------------------------------------------------- reading


def _known_language_labels() -> frozenset[str]:
    """Return the language labels of the fastText model that the LCB metric uses."""
    from tlpo.languages import LID176_CODES

    return frozenset(LID176_CODES)


def _read_prompt_file(path: Path, task: str, known_languages: frozenset[str]) -> list[LCBPrompt]:
    language = path.stem
    if language not in known_languages:
        raise ValueError(
            f"unknown language file name {path}: LCB scores a completion against the "
            f"fastText lid.176 label named by the file, and {language!r} is not one. "
            "Rename the file to the language's ISO 639-1 code, e.g. ko.csv."
        )
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [name for name in PROMPT_COLUMNS if name not in columns]
            if missing:
                raise ValueError(
                    f"malformed LCB test-set file {path}: missing column(s) "
                    f"{', '.join(missing)}; found {columns or 'no header'}. Every file "
                    f"needs the header {','.join(PROMPT_COLUMNS)}."
                )
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as error:
        raise ValueError(f"malformed LCB test-set file {path}: {error}") from error

    prompts = []
    for index, row in enumerate(rows):
        line = f"{path}, data row {index + 1}"
        if None in row or any(row[name] is None for name in PROMPT_COLUMNS):
            raise ValueError(
                f"malformed LCB test-set file: {line} has {len(row)} fields where the "
                f"header has {len(columns)}; check its quoting."
            )
        if row["language"] != language:
            raise ValueError(
                f"malformed LCB test-set file: {line} has language {row['language']!r} "
                f"but the file name says {language!r}."
            )
        if not row["prompt"].strip():
            raise ValueError(f"malformed LCB test-set file: {line} has an empty prompt.")
        prompts.append(LCBPrompt(task, row["source"], language, index, row["prompt"]))
    if not prompts:
        raise ValueError(f"malformed LCB test-set file {path}: it has a header but no prompts.")
    return prompts


def read_test_sets(
    root: str | os.PathLike,
    *,
    tasks: Iterable[str] | None = None,
    sources: Iterable[str] | None = None,
    languages: Iterable[str] | None = None,
) -> list[LCBPrompt]:
    """Read the LCB ``test_sets`` folder, optionally keeping some tasks, sources, languages.

    A source matches by folder name (``native``) or by the ``source`` column
    (``native_prompts``). Every filter value must match at least one file, so a typo
    raises instead of silently evaluating nothing. Raises ``FileNotFoundError`` for a
    missing folder and ``ValueError`` for malformed files and unknown file names.
    Returns the prompts in test-set order: task, then source folder, then language.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"LCB test-set folder not found: {root}. Pass the `test_sets` folder of the "
            "LCB release, which contains monolingual/ and crosslingual/."
        )
    requested_tasks = list(tasks) if tasks else list(TASKS)
    for task in requested_tasks:
        if task not in TASKS:
            raise ValueError(f"unknown LCB task {task!r}; choose from {', '.join(TASKS)}.")
    task_dirs = [root / task for task in requested_tasks if (root / task).is_dir()]
    if not task_dirs:
        raise FileNotFoundError(
            f"no {' or '.join(requested_tasks)} folder in {root}; is it the LCB `test_sets` folder?"
        )

    requested_sources = set(sources) if sources else None
    requested_languages = None
    if languages:
        from tlpo.languages import normalize_language

        # Accept the spellings every other command takes (kor, ko-KR, Korean); the
        # test-set files are named by the canonical code. Unknown codes raise ValueError.
        requested_languages = {normalize_language(code) for code in languages}
    known_languages = _known_language_labels()
    matched_sources: set[str] = set()
    present_languages: set[str] = set()
    prompts: list[LCBPrompt] = []
    for task_dir in task_dirs:
        for source_dir in sorted(path for path in task_dir.iterdir() if path.is_dir()):
            files = sorted(source_dir.glob("*.csv"))
            if not files:
                raise ValueError(
                    f"missing LCB test-set files: {source_dir} contains no .csv file; "
                    "remove the folder or restore its <language>.csv files."
                )
            if requested_languages is not None:
                files = [path for path in files if path.stem in requested_languages]
            for path in files:
                file_prompts = _read_prompt_file(path, task_dir.name, known_languages)
                names = {source_dir.name, file_prompts[0].source}
                present_languages.add(path.stem)
                if requested_sources is not None and not names & requested_sources:
                    continue
                matched_sources |= names
                prompts.extend(file_prompts)

    if requested_languages is not None and requested_languages - present_languages:
        raise ValueError(
            f"no LCB test-set file for language(s) {sorted(requested_languages - present_languages)} "
            f"under {root} with the chosen tasks."
        )
    if requested_sources is not None and requested_sources - matched_sources:
        raise ValueError(
            f"no LCB test-set file for source(s) {sorted(requested_sources - matched_sources)} "
            f"under {root} with the chosen tasks and languages."
        )
    if not prompts:
        raise ValueError(f"no LCB prompts found under {root}.")
    return prompts


# --------------------------------------------------------------------------- output file


def _format_row(row: Sequence[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue()


def _output_row(prompt: LCBPrompt, model_name: str, completion: str) -> tuple:
    return (prompt.index, model_name, completion, prompt.task, prompt.source, prompt.language)


def read_completed_rows(path: Path, model_name: str) -> tuple[dict[tuple, str], int]:
    """Read the rows already in an output file being resumed.

    Returns the completions by prompt key and the byte length of the valid part of the
    file. Every record must re-serialise to exactly the bytes it was read from, so a
    record cut short by an interrupted write (and anything after it) is left out.
    Raises ``ValueError`` when the file is not an LCB output of ``model_name``.
    """
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    header = _format_row(OUTPUT_COLUMNS)
    if header.startswith(text):
        return {}, 0  # empty, or only part of the header was written before a kill
    if not text.startswith(header):
        raise ValueError(
            f"{path} exists but does not start with the LCB header "
            f"{','.join(OUTPUT_COLUMNS)}; pass another --out or delete the file."
        )

    completed: dict[tuple, str] = {}
    offset = len(header)
    reader = csv.reader(io.StringIO(text[offset:], newline=""))
    try:
        for record in reader:
            expected = _format_row(record)
            if len(record) != len(OUTPUT_COLUMNS) or not text.startswith(expected, offset):
                break
            row_id, row_model, completion, task, source, language = record
            if row_model != model_name:
                raise ValueError(
                    f"{path} holds completions of model {row_model!r}, not {model_name!r}; "
                    "pass another --out to keep both, or delete the file."
                )
            completed[(task, source, language, int(row_id))] = completion
            offset += len(expected)
    except csv.Error:
        pass  # a torn quoted field at the end; everything before `offset` is valid
    valid_bytes = len(text[:offset].encode("utf-8"))
    if valid_bytes < len(data):
        logger.warning(
            "dropping %d byte(s) of an incomplete record at the end of %s",
            len(data) - valid_bytes,
            path,
        )
    return completed, valid_bytes


def _write_atomically(path: Path, content: str) -> None:
    write_text_atomically(path, content, newline="")


# --------------------------------------------------------------------------- models


def load_model_and_tokenizer(model_path: str | os.PathLike, *, device: str = "auto", dtype: str = "auto"):
    """Load a causal LM and its tokenizer from a local folder or the Hugging Face cache.

    A folder with a PEFT adapter (`adapter_config.json`, as `tlpo train --lora` writes)
    loads its base model with the adapter applied. Raises ``FileNotFoundError`` naming
    the path when the folder does not exist or no model can be loaded from it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(model_path)
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") != 1
    if looks_like_path and not Path(name).expanduser().exists():
        raise FileNotFoundError(
            f"model folder not found: {name}. Pass the folder that save_pretrained wrote, "
            "or omit --model to use the embedded default model."
        )
    folder = Path(name).expanduser()
    if folder.is_dir() and not any((folder / file).is_file() for file in ("config.json", "adapter_config.json")):
        raise FileNotFoundError(
            f"{name} contains no config.json or adapter_config.json, so it is not a saved "
            "Hugging Face model or PEFT adapter; pass the folder that save_pretrained wrote."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype if dtype == "auto" else getattr(torch, dtype)
        )
    except OSError as error:
        raise FileNotFoundError(
            f"cannot load model {name!r}: it is not a folder with a saved Hugging Face "
            f"model, and loading it as a hub name failed: {str(error).splitlines()[0]} "
            "Pass the folder that save_pretrained wrote, or omit --model to use the "
            "embedded default model."
        ) from error
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.eval()
    return model, tokenizer


def encode_chat_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Apply the tokenizer's chat template to one user turn per prompt and tokenize it."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template, so LCB prompts cannot be put in a user "
            "turn; use an instruction-tuned model or set tokenizer.chat_template."
        )
    encoded = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        # The template already contains the special tokens (BOS and the like).
        encoded.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return encoded


def greedy_generate_transformers(model, tokenizer, batch_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
    """Decode greedily with ``model.generate`` on one left-padded batch; return the new text."""
    import torch

    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for row, ids in enumerate(batch_ids):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1

    device = next(model.parameters()).device
    with torch.inference_mode():
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
        )
    new_tokens = output[:, width:].tolist()
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class VLLMGenerator:
    """Greedy decoding with vLLM over the same chat-template token ids."""

    # NOTE: written against vLLM's documented `LLM.generate` with token-id prompts but
    # never run in this repository's tests, which have no GPU and no vLLM.

    def __init__(self, model_path: str, *, dtype: str = "auto", **engine_options):
        try:
            import vllm
        except ImportError as error:
            raise ImportError(
                "the vllm backend needs the vllm package: pip install 'tlpo[vllm]' on a "
                "machine with a supported GPU, or use --backend transformers."
            ) from error
        self._vllm = vllm
        self.llm = vllm.LLM(model=model_path, dtype=dtype, **engine_options)
        self.tokenizer = self.llm.get_tokenizer()

    def __call__(self, batch_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=True)
        inputs = [{"prompt_token_ids": list(ids)} for ids in batch_ids]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]


# --------------------------------------------------------------------------- generation


def plan_batches(
    prompt_ids: Sequence[Sequence[int]],
    batch_size: int,
    *,
    max_new_tokens: int = 0,
    max_batch_tokens: int | None = None,
) -> list[list[int]]:
    """Cut prompt indices into batches of similar length, longest first.

    A batch holds at most `batch_size` prompts and, when `max_batch_tokens` is set, at
    most that many padded tokens (prompts x (longest prompt + `max_new_tokens`)), but
    always at least one prompt. The batches depend only on the prompts and these
    settings, so every run of one command forms the same batches. Longest first makes
    an out-of-memory error show in the first batch.
    """
    order = sorted(range(len(prompt_ids)), key=lambda i: (-len(prompt_ids[i]), i))
    batches: list[list[int]] = []
    for index in order:
        if batches:
            batch = batches[-1]
            # The first prompt of a batch is its longest, so it sets the padded width.
            width = len(prompt_ids[batch[0]]) + max_new_tokens
            fits = max_batch_tokens is None or (len(batch) + 1) * width <= max_batch_tokens
            if len(batch) < batch_size and fits:
                batch.append(index)
                continue
        batches.append([index])
    return batches


def _warn_about_long_prompts(tokenizer, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> None:
    limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or limit > 10**8:
        return  # the tokenizer states no limit
    too_long = sum(1 for ids in prompt_ids if len(ids) + max_new_tokens > limit)
    if too_long:
        # NOTE: prompts are not truncated, because LCB feeds every prompt whole; a model
        # with learned position embeddings fails on them, a RoPE model degrades.
        logger.warning(
            "%d of %d prompts plus %d new tokens exceed the tokenizer's model_max_length %d",
            too_long, len(prompt_ids), max_new_tokens, limit,
        )


def generate_lcb_completions(
    prompts: Sequence[LCBPrompt],
    out_path: str | os.PathLike,
    *,
    tokenizer,
    generate_batch: Callable[[Sequence[Sequence[int]], int], list[str]],
    model_name: str,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    max_batches: int | None = None,
    progress: bool = True,
) -> dict:
    """Generate the completions missing from ``out_path`` and append them batch by batch.

    ``generate_batch(batch_ids, max_new_tokens)`` returns the decoded new text of each
    prompt. Batches are formed by :func:`plan_batches` from `batch_size` and
    `max_batch_tokens`. ``max_batches`` stops after that many generated batches, leaving the file
    as an interrupted run would. Returns counts: ``total``, ``reused`` (rows already in
    the file), ``generated`` and ``complete`` (whether every row is now written, in
    which case the file has been rewritten in test-set order).
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    keys = [prompt.key for prompt in prompts]
    if len(set(keys)) != len(keys):
        raise ValueError("the prompts contain duplicate (task, source, language, id) keys.")

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    completed: dict[tuple, str] = {}
    if out_path.exists():
        completed, valid_bytes = read_completed_rows(out_path, model_name)
        with out_path.open("r+b") as handle:
            handle.truncate(valid_bytes)
    reused = sum(1 for key in keys if key in completed)

    prompt_ids = encode_chat_prompts(tokenizer, [prompt.prompt for prompt in prompts])
    _warn_about_long_prompts(tokenizer, prompt_ids, max_new_tokens)
    batches = plan_batches(prompt_ids, batch_size, max_new_tokens=max_new_tokens, max_batch_tokens=max_batch_tokens)
    pending = [batch for batch in batches if any(keys[i] not in completed for i in batch)]

    generated = 0
    bar = tqdm(total=len(prompts), initial=reused, unit="prompt", desc="LCB generation", disable=not progress)
    with out_path.open("a", encoding="utf-8", newline="") as handle:
        if handle.tell() == 0:
            handle.write(_format_row(OUTPUT_COLUMNS))
        for batch_number, batch in enumerate(pending):
            if max_batches is not None and batch_number >= max_batches:
                break
            # A partly written batch is generated whole, so its completions equal those
            # of an uninterrupted run; only the missing rows are appended.
            texts = generate_batch([prompt_ids[i] for i in batch], max_new_tokens)
            chunk = []
            for i, text in zip(batch, texts, strict=True):
                if keys[i] not in completed:
                    completed[keys[i]] = text
                    chunk.append(_format_row(_output_row(prompts[i], model_name, text)))
            handle.write("".join(chunk))
            handle.flush()
            os.fsync(handle.fileno())
            generated += len(chunk)
            bar.update(len(chunk))
    bar.close()

    complete = all(key in completed for key in keys)
    if complete:
        # Rows of prompts outside this selection (an earlier run with other filters)
        # are kept after the selected ones.
        ordered = [_format_row(OUTPUT_COLUMNS)]
        ordered += [_format_row(_output_row(p, model_name, completed[p.key])) for p in prompts]
        selected = set(keys)
        for task, source, language, index in sorted(set(completed) - selected):
            text = completed[(task, source, language, index)]
            ordered.append(_format_row((index, model_name, text, task, source, language)))
        _write_atomically(out_path, "".join(ordered))
    return {"total": len(prompts), "reused": reused, "generated": generated, "complete": complete}


def run_generation(
    model_path: str | os.PathLike,
    test_sets: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    tasks: Iterable[str] | None = None,
    sources: Iterable[str] | None = None,
    languages: Iterable[str] | None = None,
    backend: str = "transformers",
    model_name: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 16,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    device: str = "auto",
    dtype: str = "auto",
    max_batches: int | None = None,
    progress: bool = True,
) -> dict:
    """Read the test sets, load the model with ``backend`` and write the LCB CSV.

    Returns the counts of :func:`generate_lcb_completions` plus ``out`` and ``model``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}.")
    prompts = read_test_sets(test_sets, tasks=tasks, sources=sources, languages=languages)
    model_path = str(model_path)
    name = model_name or Path(model_path.rstrip("/")).name
    if backend == "vllm":
        generator = VLLMGenerator(model_path, dtype=dtype)
        tokenizer = generator.tokenizer
        generate_batch = generator
    else:
        model, tokenizer = load_model_and_tokenizer(model_path, device=device, dtype=dtype)

        def generate_batch(batch_ids, new_tokens):
            return greedy_generate_transformers(model, tokenizer, batch_ids, new_tokens)

    logger.info("generating %d LCB completions with %s (%s backend)", len(prompts), name, backend)
    counts = generate_lcb_completions(
        prompts,
        out_path,
        tokenizer=tokenizer,
        generate_batch=generate_batch,
        model_name=name,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        max_batches=max_batches,
        progress=progress,
    )
    return {**counts, "out": str(out_path), "model": name}
