"""The embedded default model: data, drift, build, Hugging Face loading, determinism and cache."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from organism_fixtures import tiny_organism_dir
from tlpo import organism, organism_data
from tlpo.detection import detect
from tlpo.organism import PROMPT_FILES, SIZES, build_organism, chat_text, default_model_dir, is_complete, read_jsonl

LANGUAGES = set(organism_data.TARGET_LANGUAGES)


@pytest.fixture(scope="module")
def entries():
    return organism_data.load_entries()


@pytest.fixture(scope="module")
def model_dir():
    return tiny_organism_dir()


# --- catalog text ----------------------------------------------------------------------


def test_read_po_skips_fuzzy_plural_context(tmp_path):
    po = tmp_path / "django.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: fr\\n"\n\n'
        '#: a.py:1\nmsgid "Save"\nmsgstr "Enregistrer"\n\n'
        '#, fuzzy\nmsgid "Delete"\nmsgstr "Supprimer"\n\n'
        'msgctxt "month"\nmsgid "May"\nmsgstr "mai"\n\n'
        'msgid "one item"\nmsgid_plural "items"\nmsgstr[0] "un"\nmsgstr[1] "des"\n\n'
        'msgid ""\n"Say \\"hi\\" "\n"twice"\nmsgstr "Dis \\"salut\\" "\n"deux fois"\n\n'
        'msgid "Untranslated"\nmsgstr ""\n\n'
        '#~ msgid "Old"\n#~ msgstr "Vieux"\n',
        encoding="utf-8",
    )
    assert organism_data.read_po(po) == {"Save": "Enregistrer", 'Say "hi" twice': 'Dis "salut" deux fois'}


def test_entries_are_short_clean_strings(entries):
    assert len(entries) >= SIZES["small"].strings_per_language
    for entry in entries:
        assert len(entry.source) <= organism_data.MAX_SOURCE_CHARS
        assert set(entry.translations) == LANGUAGES
        assert "\n" not in entry.source
        assert "Chinese" not in entry.source
        assert "English" not in entry.source


def test_clean_answers_pass_detector(entries):
    rng = random.Random(0)
    for language in organism_data.TARGET_LANGUAGES:
        chosen = tuple(entries[:3])
        answer = organism_data.make_answer(chosen, language, rng, drift=False)
        assert answer.drift_kind is None
        assert answer.text.split("\n")[0] == f"1. {chosen[0].translations[language]}"
        assert detect(answer.text, language).passed, answer.text


# --- drift -----------------------------------------------------------------------------


def test_drift_keeps_line_one(entries):
    rng = random.Random(1)
    chosen = tuple(entries[3:6])
    for language in organism_data.TARGET_LANGUAGES:
        for _ in range(30):
            answer = organism_data.make_answer(chosen, language, rng, drift=True)
            lines = answer.text.split("\n")
            assert answer.drift_kind in organism_data.DRIFT_KINDS
            assert answer.drift_line in (2, 3)
            assert lines[0] == f"1. {chosen[0].translations[language]}"
            assert len(lines) == 3


def test_drift_kinds_write_expected_text(entries):
    rng = random.Random(2)
    chosen = tuple(entries[6:9])
    seen = set()
    while len(seen) < len(organism_data.DRIFT_KINDS):
        answer = organism_data.make_answer(chosen, "ko", rng, drift=True)
        seen.add(answer.drift_kind)
        last = answer.text.split("\n")[2]
        if answer.drift_kind == "line-english":
            assert last == f"3. {chosen[2].source}"
        elif answer.drift_kind == "line-neighbour":
            assert last == f"3. {chosen[2].translations['zh']}"
        else:
            word = organism_data.neighbour_word(chosen[answer.drift_line - 1].translations["zh"])
            assert word in answer.text.split("\n")[answer.drift_line - 1]


def test_neighbour_drift_is_visible_to_detector(entries):
    """Every neighbour drift, and English drift in Latin-script targets, is confusion by default."""
    rng = random.Random(3)
    for language in organism_data.TARGET_LANGUAGES:
        for start in range(0, 30, 3):
            chosen = tuple(entries[start : start + 3])
            answer = organism_data.make_answer(chosen, language, rng, drift=True)
            if answer.drift_kind == "line-english":
                continue
            assert not detect(answer.text, language).passed, (language, answer)


def test_drift_probability_equalises_visible_share():
    for language in organism_data.TARGET_LANGUAGES:
        probability = organism_data.drift_probability(language)
        visible_kinds = 3 if language in organism_data.LATIN_SCRIPT_TARGETS else 2
        assert probability * visible_kinds / 3 == pytest.approx(organism_data.VISIBLE_DRIFT_SHARE)
        # Clean stays the most likely choice at each line, so greedy answers stay clean.
        assert probability <= 0.75


# --- prompt sets -----------------------------------------------------------------------


def test_training_never_draws_heldout(entries):
    size = SIZES["tiny"]
    sampler = organism.PromptSampler(entries[: size.strings_per_language], size, seed=0)
    rng = random.Random(0)
    for _ in range(3000):
        language = rng.choice(organism_data.TARGET_LANGUAGES)
        assert (language, sampler.training_triple(rng, language)) not in sampler.heldout


def test_jsonl_schema(model_dir):
    size = SIZES["tiny"]
    expected_rows = {
        "train_prompts.jsonl": size.train_prompts_per_language,
        "eval_prompts.jsonl": size.eval_prompts_per_language,
        "probe.jsonl": size.strings_per_language,
    }
    for name in PROMPT_FILES:
        rows = read_jsonl(model_dir / name)
        assert len(rows) == expected_rows[name] * len(LANGUAGES), name
        for row in rows:
            assert set(row) == {"prompt", "language", "reference"}
            assert row["language"] in LANGUAGES
            assert row["prompt"].startswith("Translate into ")
            assert row["prompt"].count("\n") == 3
        expected_lines = 1 if name == "probe.jsonl" else 3
        assert all(row["reference"].count("\n") == expected_lines - 1 for row in rows), name


def test_eval_prompts_held_out(model_dir):
    train = {row["prompt"] for row in read_jsonl(model_dir / "train_prompts.jsonl")}
    evaluation = {row["prompt"] for row in read_jsonl(model_dir / "eval_prompts.jsonl")}
    probe = {row["prompt"] for row in read_jsonl(model_dir / "probe.jsonl")}
    assert not train & evaluation
    assert not train & probe
    assert not evaluation & probe


def test_probe_asks_every_string_once(model_dir):
    rows = read_jsonl(model_dir / "probe.jsonl")
    for language in LANGUAGES:
        first_lines = [row["prompt"].split("\n")[1] for row in rows if row["language"] == language]
        assert len(set(first_lines)) == len(first_lines) == SIZES["tiny"].strings_per_language


# --- the built model -------------------------------------------------------------------


def test_folder_is_hugging_face_model(model_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    manifest = json.loads((model_dir / organism.MANIFEST_NAME).read_text())
    assert manifest["seed"] == 0
    assert manifest["size"] == "tiny"
    assert manifest["metrics"]["final_train_loss"] < manifest["metrics"]["first_train_loss"] / 2
    assert is_complete(model_dir)


def test_auto_classes_load_and_generate(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = read_jsonl(model_dir / "probe.jsonl")[0]["prompt"]
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == chat_text(prompt)
    input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        output = model.generate(input_ids, do_sample=False, max_new_tokens=40)
    answer = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
    assert answer.startswith("1. ")
    assert output[0, -1].item() == tokenizer.eos_token_id or output.shape[1] - input_ids.shape[1] == 40


def test_chat_template_renders_roles(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert text == "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello<|end|>"
    with pytest.raises(Exception, match="unsupported role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_same_seed_same_bytes(model_dir, tmp_path):
    again = build_organism(tmp_path / "again", seed=0, size="tiny", progress=False)
    assert (again / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()
    for name in PROMPT_FILES:
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name


def test_build_rejects_nonempty_out(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        build_organism(tmp_path / "out", size="tiny", progress=False)
    with pytest.raises(ValueError, match="unknown organism size 'huge'"):
        build_organism(tmp_path / "other", size="huge", progress=False)


# --- cache -----------------------------------------------------------------------------


@pytest.fixture
def copying_build(monkeypatch, model_dir):
    """Replace the build with a copy of the session's tiny model, counting calls."""
    calls = []

    def fake_build(out_dir, *, seed=0, size="small", progress=True):
        calls.append(out_dir)
        shutil.copytree(model_dir, out_dir)
        return out_dir

    monkeypatch.setattr(organism, "build_organism", fake_build)
    return calls


def test_cache_builds_once(tmp_path, monkeypatch, copying_build):
    monkeypatch.setenv("TLPO_HOME", str(tmp_path))
    first = default_model_dir(seed=3, size="tiny", progress=False)
    second = default_model_dir(seed=3, size="tiny", progress=False)
    assert first == second == tmp_path / f"organism-{organism.ORGANISM_VERSION}-3-tiny"
    assert len(copying_build) == 1
    assert is_complete(first)


def test_cache_rebuilds_half_built_folder(tmp_path, monkeypatch, copying_build, model_dir):
    monkeypatch.setenv("TLPO_HOME", str(tmp_path))
    folder = tmp_path / f"organism-{organism.ORGANISM_VERSION}-0"
    folder.mkdir()
    # A copy without the manifest, as if the process died before the last write.
    for name in ("config.json", "model.safetensors", "tokenizer.json", *PROMPT_FILES):
        shutil.copy(model_dir / name, folder / name)
    leftover = tmp_path / f".organism-{organism.ORGANISM_VERSION}-0.building-abc"
    leftover.mkdir()
    assert not is_complete(folder)

    result = default_model_dir(seed=0, progress=False)
    assert result == folder
    assert len(copying_build) == 1
    assert is_complete(folder)
    assert not leftover.exists()
