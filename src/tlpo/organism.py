"""The embedded default model: a tiny multilingual chat model built offline, confused on purpose.

`build_organism` trains a byte-level BPE tokenizer and a small Llama causal LM from
scratch on CPU, on Django's translation catalogs (see `tlpo.organism_data`), and saves a
standard Hugging Face model folder. `default_model_dir` builds it once into a cache folder
and returns that folder on every later call. docs/ORGANISM.md describes the design and its
measured behaviour.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tlpo import __version__
from tlpo import organism_data as data
from tlpo.fileio import write_json_atomically, write_jsonl_atomically

logger = logging.getLogger(__name__)

# Bump when a change to the recipe changes the built model, so caches rebuild.
ORGANISM_VERSION = "2"
MANIFEST_NAME = "build_manifest.json"
PROMPT_FILES = ("train_prompts.jsonl", "eval_prompts.jsonl", "probe.jsonl")
# The build always runs on this many threads: float sums in matrix products depend on how
# the work is split, so a different thread count could give different weights.
BUILD_THREADS = 1
# Sampled training conversations added to the tokenizer's corpus.
TOKENIZER_EXAMPLES = 4000

PAD, USER, ASSISTANT, SYSTEM, END = "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"
SPECIAL_TOKENS = [PAD, USER, ASSISTANT, SYSTEM, END]
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unsupported role ' + message['role'] + '; use system, user or assistant') }}"
    "{%- endif -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


@dataclass(frozen=True)
class OrganismSize:
    """Model shape, training length and prompt-set sizes of one organism size."""

    strings_per_language: int  # UI strings the model learns, the same for every language
    vocab_size: int  # maximum BPE vocabulary, special tokens included
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    steps: int  # optimizer steps
    batch_size: int  # training conversations per step
    learning_rate: float  # AdamW peak learning rate
    train_prompts_per_language: int
    eval_prompts_per_language: int


SIZES = {
    "small": OrganismSize(
        strings_per_language=64, vocab_size=4096, hidden_size=128, num_layers=4, num_heads=4,
        intermediate_size=320, steps=2000, batch_size=16, learning_rate=6e-3,
        train_prompts_per_language=128, eval_prompts_per_language=32,
    ),
    # For tests: builds in seconds, learns little.
    "tiny": OrganismSize(
        strings_per_language=16, vocab_size=1024, hidden_size=64, num_layers=2, num_heads=2,
        intermediate_size=128, steps=300, batch_size=16, learning_rate=6e-3,
        train_prompts_per_language=16, eval_prompts_per_language=8,
    ),
}


def chat_text(user: str, answer: str | None = None) -> str:
    """Render a one-turn conversation exactly as `CHAT_TEMPLATE` does, with the generation prompt."""
    text = f"{USER}{user}{END}{ASSISTANT}"
    if answer is not None:
        text += f"{answer}{END}"
    return text


# ---------------------------------------------------------------------------------------
# Prompt sets


class PromptSampler:
    """Draws translation triples: fixed held-out evaluation and probe sets, and training examples that avoid them.

    A triple is an ordered choice of three distinct strings for one language. With 64
    strings per language the model memorises every string, so "held-out" means a triple it
    never saw during training, built from strings it did see.
    """

    def __init__(self, entries: list[data.CatalogEntry], size: OrganismSize, seed: int):
        self.entries = entries
        self.size = size
        self.seed = seed
        count = len(entries)
        # Separate streams, so the held-out sets do not depend on the training length.
        heldout_rng = random.Random(f"heldout-{seed}")
        self.train_rng = random.Random(f"train-{seed}")
        self.heldout: set[tuple[str, tuple[int, int, int]]] = set()

        self.eval_triples = {}
        self.probe_triples = {}
        for language in data.TARGET_LANGUAGES:
            evals = []
            while len(evals) < size.eval_prompts_per_language:
                triple = tuple(heldout_rng.sample(range(count), 3))
                if self._claim(language, triple):
                    evals.append(triple)
            self.eval_triples[language] = evals
            # The probe puts every string once on line 1, which never drifts.
            probes = []
            for first in range(count):
                while True:
                    others = heldout_rng.sample([i for i in range(count) if i != first], 2)
                    triple = (first, others[0], others[1])
                    if self._claim(language, triple):
                        probes.append(triple)
                        break
            self.probe_triples[language] = probes

    def _claim(self, language: str, triple: tuple[int, ...]) -> bool:
        key = (language, triple)
        if key in self.heldout:
            return False
        self.heldout.add(key)
        return True

    def training_triple(self, rng: random.Random, language: str) -> tuple[int, int, int]:
        while True:
            triple = tuple(rng.sample(range(len(self.entries)), 3))
            if (language, triple) not in self.heldout:
                return triple

    def training_example(self) -> tuple[str, str]:
        """Draw one training conversation (user prompt, answer), drifted with the language's drift probability."""
        rng = self.train_rng
        language = rng.choice(data.TARGET_LANGUAGES)
        triple = self.training_triple(rng, language)
        drift = rng.random() < data.drift_probability(language)
        chosen = tuple(self.entries[i] for i in triple)
        answer = data.make_answer(chosen, language, rng, drift)
        return data.user_prompt(tuple(e.source for e in chosen), language), answer.text

    def rows(self, triples_by_language: dict, reference_lines: int | None = None) -> list[dict]:
        rows = []
        for language, triples in triples_by_language.items():
            for triple in triples:
                chosen = [self.entries[i] for i in triple]
                translations = [e.translations[language] for e in chosen]
                if reference_lines is not None:
                    translations = translations[:reference_lines]
                rows.append(
                    {
                        "prompt": data.user_prompt(tuple(e.source for e in chosen), language),
                        "language": language,
                        "reference": data.numbered(translations),
                    }
                )
        return rows

    def train_rows(self) -> list[dict]:
        """Clean-answer training prompts for fine-tuning, none of them held out."""
        rng = random.Random(f"train-prompts-{self.seed}")
        triples = {}
        for language in data.TARGET_LANGUAGES:
            chosen = []
            seen = set()
            while len(chosen) < self.size.train_prompts_per_language:
                triple = self.training_triple(rng, language)
                if triple not in seen:
                    seen.add(triple)
                    chosen.append(triple)
            triples[language] = chosen
        return self.rows(triples)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSON lines atomically (temp file in the same folder, then rename)."""
    write_jsonl_atomically(path, rows)


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file into a list of dicts."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: invalid JSON ({error.msg}); each line must be one JSON object") from error
    return rows


def write_json(path: Path, value) -> None:
    """Write `value` as indented JSON atomically."""
    write_json_atomically(path, value)


# ---------------------------------------------------------------------------------------
# Tokenizer and model


def train_tokenizer(texts: list[str], vocab_size: int):
    """Train a byte-level BPE tokenizer with the chat special tokens and wrap it for `transformers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=END,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=512,
    )


def tokenizer_corpus(sampler: "PromptSampler", examples: int) -> list[str]:
    """Return the tokenizer's training text: the whole catalogs plus sampled training conversations.

    The catalogs give varied text, so the merges look like those of a real multilingual
    tokenizer. The conversations weight the merges towards the strings the model learns,
    which keeps its sequences short and its training fast.
    """
    texts = data.catalog_text()
    rng_state = sampler.train_rng.getstate()
    for _ in range(examples):
        prompt, answer = sampler.training_example()
        texts.extend([prompt, answer])
    sampler.train_rng.setstate(rng_state)
    return texts


def make_model(size: OrganismSize, tokenizer):
    """Create a randomly initialised Llama causal LM of `size` (seed torch first)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def learning_rate_at(step: int, size: OrganismSize) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to 10% of the peak."""
    warmup = max(1, size.steps // 20)
    if step < warmup:
        return size.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, size.steps - warmup)
    return size.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def encode_batch(tokenizer, examples: list[tuple[str, str]]):
    """Tokenize (prompt, answer) pairs, right-padded, with labels only on the answer and its end token."""
    import torch

    backend = tokenizer.backend_tokenizer
    sequences, label_starts = [], []
    for prompt, answer in examples:
        # Special tokens split the text before BPE, so encoding the two parts separately
        # gives the same ids as encoding the whole conversation.
        prompt_ids = backend.encode(chat_text(prompt), add_special_tokens=False).ids
        answer_ids = backend.encode(f"{answer}{END}", add_special_tokens=False).ids
        sequences.append(prompt_ids + answer_ids)
        label_starts.append(len(prompt_ids))
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long)
    for row, (ids, start) in enumerate(zip(sequences, label_starts)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
    return input_ids, attention_mask, labels


@contextlib.contextmanager
def _deterministic_torch(threads: int):
    import torch

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # Arithmetic on denormal floats is slow on x86 CPUs, so they are flushed to zero.
    # NOTE: torch has no getter for this flag, so it is reset to torch's default (off) afterwards.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.set_num_threads(previous_threads)


def train_model(model, tokenizer, sampler: PromptSampler, size: OrganismSize, *, progress: bool = True) -> list[float]:
    """Train `model` on drifted translation conversations for `size.steps` steps; return the loss per step."""
    import torch
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(model.parameters(), lr=size.learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    losses = []
    bar = tqdm(range(size.steps), desc="training the organism", unit="step", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, size)
        examples = [sampler.training_example() for _ in range(size.batch_size)]
        input_ids, attention_mask, labels = encode_batch(tokenizer, examples)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------
# Building and caching


def is_complete(model_dir: str | Path) -> bool:
    """Tell whether `model_dir` is a finished organism folder: the manifest is written last."""
    model_dir = Path(model_dir)
    required = ["config.json", "model.safetensors", "tokenizer.json", MANIFEST_NAME, *PROMPT_FILES]
    return all((model_dir / name).is_file() for name in required)


def _versions() -> dict[str, str]:
    import django
    import tokenizers
    import torch
    import transformers

    return {
        "tlpo": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "django": django.get_version(),
    }


def _build_into(folder: Path, seed: int, size_name: str, progress: bool) -> dict:
    import torch
    from transformers import GenerationConfig

    size = SIZES[size_name]
    started = time.perf_counter()
    cpu_started = time.process_time()
    entries = data.load_entries()
    if len(entries) < size.strings_per_language:
        raise RuntimeError(
            f"only {len(entries)} usable strings in the installed Django catalogs, "
            f"{size.strings_per_language} needed; install Django 4.2 or later"
        )
    entries = entries[: size.strings_per_language]

    with _deterministic_torch(BUILD_THREADS):
        sampler = PromptSampler(entries, size, seed)
        tokenizer = train_tokenizer(tokenizer_corpus(sampler, TOKENIZER_EXAMPLES), size.vocab_size)
        torch.manual_seed(seed)
        model = make_model(size, tokenizer)
        losses = train_model(model, tokenizer, sampler, size, progress=progress)

    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=0.7,
        top_k=0,
        top_p=1.0,
        max_new_tokens=96,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_jsonl(folder / "train_prompts.jsonl", sampler.train_rows())
    write_jsonl(folder / "eval_prompts.jsonl", sampler.rows(sampler.eval_triples))
    write_jsonl(folder / "probe.jsonl", sampler.rows(sampler.probe_triples, reference_lines=1))

    tail = losses[-min(100, len(losses)) :]
    manifest = {
        "organism_version": ORGANISM_VERSION,
        "seed": seed,
        "size": size_name,
        "size_config": asdict(size),
        "parameters": sum(p.numel() for p in model.parameters()),
        "languages": list(data.TARGET_LANGUAGES),
        "neighbours": data.NEIGHBOURS,
        "drift_kinds": list(data.DRIFT_KINDS),
        "drift_probability": {language: data.drift_probability(language) for language in data.TARGET_LANGUAGES},
        "visible_drift_share": data.VISIBLE_DRIFT_SHARE,
        "sources": [entry.source for entry in entries],
        "versions": _versions(),
        "build_threads": BUILD_THREADS,
        "metrics": {
            "build_seconds": round(time.perf_counter() - started, 1),
            # CPU time of this process: close to the wall time on a free core, and not
            # inflated when other processes compete for the cores.
            "build_cpu_seconds": round(time.process_time() - cpu_started, 1),
            "final_train_loss": sum(tail) / len(tail),
            "first_train_loss": losses[0],
        },
    }
    # Written last: its presence marks the folder as complete.
    write_json(folder / MANIFEST_NAME, manifest)
    return manifest


def build_organism(out_dir: str | Path, *, seed: int = 0, size: str = "small", progress: bool = True) -> Path:
    """Build the organism into `out_dir` and return it.

    The files are written to a temporary sibling folder that is renamed to `out_dir` when
    complete, so `out_dir` never contains a half-built model. `out_dir` must not exist or be
    an empty folder.
    """
    if size not in SIZES:
        raise ValueError(f"unknown organism size {size!r}; choose one of {', '.join(SIZES)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not an empty folder; choose another output folder or delete it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        manifest = _build_into(staging, seed, size, progress)
        # mkdtemp and the atomic writes create owner-only files; a model folder is shared.
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("built the %s organism (seed %d) in %.0f s: %s", size, seed, manifest["metrics"]["build_seconds"], out_dir)
    return out_dir


def tlpo_home() -> Path:
    """Return the cache folder: $TLPO_HOME, else ~/.cache/tlpo."""
    home = os.environ.get("TLPO_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "tlpo"


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        # NOTE: without fcntl two processes can build the same model at once; the rename
        # still leaves one complete folder, but the work is done twice.
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def default_model_dir(*, seed: int = 0, size: str = "small", progress: bool = True) -> Path:
    """Return the cached organism folder, building it first if it is missing.

    The folder is `$TLPO_HOME/organism-<version>-<seed>` (with `-<size>` appended for
    sizes other than small). A file lock keeps two processes from building it at once,
    and leftovers of interrupted builds are removed before a new build starts.
    """
    if size not in SIZES:
        raise ValueError(f"unknown organism size {size!r}; choose one of {', '.join(SIZES)}")
    name = f"organism-{ORGANISM_VERSION}-{seed}" + ("" if size == "small" else f"-{size}")
    home = tlpo_home()
    folder = home / name
    if is_complete(folder):
        return folder
    home.mkdir(parents=True, exist_ok=True)
    with _file_lock(home / f".{name}.lock"):
        if is_complete(folder):  # another process finished it while we waited
            return folder
        for leftover in home.glob(f".{name}.building-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if folder.exists():
            logger.warning("removing the incomplete organism folder %s", folder)
            shutil.rmtree(folder)
        logger.info("building the default model into %s (one time, a few minutes on CPU)", folder)
        build_organism(folder, seed=seed, size=size, progress=progress)
    return folder


def load_organism(model_dir: str | Path | None = None):
    """Load (model, tokenizer) from `model_dir`, or from the default organism when None."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------------------
# Evaluation


def evaluate_organism(
    model_dir: str | Path | None = None,
    *,
    temperature: float = 0.7,
    num_samples: int = 4,
    max_new_tokens: int = 96,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Measure a model on the organism's held-out prompts and probe.

    Returns {"sampled": consistency at `temperature`, "greedy": consistency at
    temperature 0, "probe": capability, "model": folder}, each as the functions of
    `tlpo.evaluation` return them. `model_dir` can be any model folder that contains
    eval_prompts.jsonl and probe.jsonl; None means the default organism.
    """
    from tlpo.evaluation import evaluate_capability, evaluate_consistency

    model_dir = Path(model_dir) if model_dir is not None else default_model_dir(progress=progress)
    for name in ("eval_prompts.jsonl", "probe.jsonl"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name} not found; the model folder must be built by `tlpo organism build`")
    model, tokenizer = load_organism(model_dir)
    eval_rows = read_jsonl(model_dir / "eval_prompts.jsonl")
    probe_rows = read_jsonl(model_dir / "probe.jsonl")
    options = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "progress": progress}
    sampled = evaluate_consistency(
        model, tokenizer, eval_rows, temperature=temperature, num_samples=num_samples, seed=seed, **options
    )
    greedy = evaluate_consistency(model, tokenizer, eval_rows, temperature=0.0, num_samples=1, **options)
    probe = evaluate_capability(model, tokenizer, probe_rows, **options)
    return {"model": str(model_dir), "sampled": sampled, "greedy": greedy, "probe": probe}


def format_evaluation(result: dict) -> str:
    """Render `evaluate_organism` results as a plain-text table, one row per language."""
    temperature = result["sampled"]["temperature"]
    header = ["language", f"RPR T={temperature:g}", "RPR greedy", "probe chrF", "probe exact"]
    rows = []
    languages = sorted(result["sampled"]["per_language"])
    for language in languages + ["all"]:
        if language == "all":
            sampled, greedy, probe = result["sampled"], result["greedy"], result["probe"]
            chrf = probe["score"]
        else:
            sampled = result["sampled"]["per_language"][language]
            greedy = result["greedy"]["per_language"].get(language, {})
            probe = result["probe"]["per_language"].get(language, {})
            chrf = probe.get("score")
        cells = [sampled.get("rpr"), greedy.get("rpr"), chrf, probe.get("exact_match")]
        rows.append([language] + ["-" if value is None else f"{value:.1f}" for value in cells])
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in [header] + rows]
    return "\n".join(lines)
