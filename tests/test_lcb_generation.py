import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_chat_model import build_tiny_chat_model

from tlpo.lcb_generation import (
    OUTPUT_COLUMNS,
    generate_lcb_completions,
    load_model_and_tokenizer,
    read_completed_rows,
    read_test_sets,
    run_generation,
)

CROSS_HEADER = ["prompt", "location", "phrasing", "language", "source"]
MONO_HEADER = ["prompt", "source", "language"]


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_test_sets(root: Path) -> Path:
    """Write a small LCB-shaped folder: 2 cross-lingual and 2 monolingual files."""
    topics = ["the weather", "a good book", "cooking rice", "the ocean", "trains", "music"]
    for language, name in (("fr", "French"), ("ko", "Korean")):
        rows = [
            [f"Reply in {name}. Write two sentences about {topic}.", "Start", "reply in {language_requested}", language, "okapi"]
            for topic in topics
        ]
        write_csv(root / "crosslingual" / "okapi" / f"{language}.csv", CROSS_HEADER, rows)
    write_csv(
        root / "monolingual" / "native" / "ja.csv",
        MONO_HEADER,
        [["好きな季節について教えてください。", "native_prompts", "ja"], ["猫の名前を三つ考えて。", "native_prompts", "ja"]],
    )
    write_csv(
        root / "monolingual" / "native" / "fr.csv",
        MONO_HEADER,
        [["Donnez trois idées de repas rapides.", "native_prompts", "fr"]],
    )
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "tiny-chat")


@pytest.fixture()
def test_sets(tmp_path) -> Path:
    return make_test_sets(tmp_path / "test_sets")


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- reading


def test_read_release_crosslingual_okapi(lcb_dir):
    prompts = read_test_sets(lcb_dir / "test_sets", tasks=["crosslingual"], sources=["okapi"])
    assert len(prompts) == 1400
    assert {p.language for p in prompts} == {
        "fr", "de", "pt", "ko", "zh", "ru", "ja", "id", "vi", "ar", "es", "it", "tr", "hi"
    }
    assert {p.task for p in prompts} == {"crosslingual"}
    assert [p.index for p in prompts[:3]] == [0, 1, 2]


def test_read_source_by_folder_or_column(lcb_dir):
    by_folder = read_test_sets(lcb_dir / "test_sets", sources=["native"])
    by_column = read_test_sets(lcb_dir / "test_sets", sources=["native_prompts"])
    assert len(by_folder) == 400
    assert by_folder == by_column
    assert {p.source for p in by_folder} == {"native_prompts"}


def test_read_filters_language(test_sets):
    prompts = read_test_sets(test_sets, languages=["ko"])
    assert len(prompts) == 6
    assert {p.language for p in prompts} == {"ko"}


def test_read_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="test-set folder not found"):
        read_test_sets(tmp_path / "nowhere")


def test_read_folder_without_tasks(tmp_path):
    with pytest.raises(FileNotFoundError, match="monolingual or crosslingual"):
        read_test_sets(tmp_path)


def test_read_source_folder_without_csv(test_sets):
    (test_sets / "crosslingual" / "sharegpt").mkdir()
    with pytest.raises(ValueError, match=r"sharegpt contains no \.csv file"):
        read_test_sets(test_sets)


def test_read_missing_column(test_sets):
    write_csv(test_sets / "crosslingual" / "okapi" / "de.csv", ["prompt", "source"], [["Reply in German. Hi", "okapi"]])
    with pytest.raises(ValueError, match=r"de\.csv: missing column\(s\) language"):
        read_test_sets(test_sets)


def test_read_row_with_extra_fields(test_sets):
    path = test_sets / "monolingual" / "native" / "fr.csv"
    path.write_text("prompt,source,language\nBonjour,native_prompts,fr,extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match="data row 1 has 4 fields"):
        read_test_sets(test_sets)


def test_read_language_column_mismatch(test_sets):
    write_csv(test_sets / "monolingual" / "native" / "es.csv", MONO_HEADER, [["Hola", "native_prompts", "pt"]])
    with pytest.raises(ValueError, match="has language 'pt' but the file name says 'es'"):
        read_test_sets(test_sets)


def test_read_invalid_utf8(test_sets):
    (test_sets / "monolingual" / "native" / "es.csv").write_bytes(b"prompt,source,language\n\xff\xfe,x,es\n")
    with pytest.raises(ValueError, match=r"malformed LCB test-set file .*es\.csv"):
        read_test_sets(test_sets)


def test_read_unknown_language_file_name(test_sets):
    write_csv(test_sets / "crosslingual" / "okapi" / "french.csv", CROSS_HEADER, [["Reply in French.", "Start", "x", "french", "okapi"]])
    with pytest.raises(ValueError, match="unknown language file name .*french.csv"):
        read_test_sets(test_sets)


def test_read_language_spellings(test_sets):
    for spelling in ("ko", "kor", "ko-KR", "Korean"):
        prompts = read_test_sets(test_sets, languages=[spelling])
        assert {prompt.language for prompt in prompts} == {"ko"}
        assert len(prompts) == 6


def test_read_unmatched_filter(test_sets):
    with pytest.raises(ValueError, match=r"no LCB test-set file for language\(s\) \['sw'\]"):
        read_test_sets(test_sets, languages=["fr", "sw"])
    with pytest.raises(ValueError, match="unknown or unsupported language code 'xx'"):
        read_test_sets(test_sets, languages=["xx"])
    with pytest.raises(ValueError, match=r"no LCB test-set file for source\(s\) \['okapy'\]"):
        read_test_sets(test_sets, sources=["okapy"])
    with pytest.raises(ValueError, match="unknown LCB task 'crosslingal'"):
        read_test_sets(test_sets, tasks=["crosslingal"])


# ----------------------------------------------------------------------------- generation


def test_generate_writes_lcb_columns(tiny_model, test_sets, tmp_path):
    out = tmp_path / "out.csv"
    counts = run_generation(tiny_model, test_sets, out, max_new_tokens=6, batch_size=4, progress=False)
    assert counts["total"] == 15
    assert counts["generated"] == 15
    assert counts["complete"] is True
    assert counts["model"] == "tiny-chat"

    rows = read_rows(out)
    assert list(rows[0].keys()) == list(OUTPUT_COLUMNS)
    assert len(rows) == 15
    # Test-set order: task folders, then source folders, then languages, then row index.
    assert [(r["task"], r["language"], r["id"]) for r in rows[:7]] == [
        ("monolingual", "fr", "0"),
        ("monolingual", "ja", "0"),
        ("monolingual", "ja", "1"),
        ("crosslingual", "fr", "0"),
        ("crosslingual", "fr", "1"),
        ("crosslingual", "fr", "2"),
        ("crosslingual", "fr", "3"),
    ]
    assert {r["source"] for r in rows} == {"native_prompts", "okapi"}
    assert {r["model"] for r in rows} == {"tiny-chat"}
    assert all(r["completion"] for r in rows)


def test_generate_matches_unbatched(tiny_model, test_sets, tmp_path):
    batched = tmp_path / "batched.csv"
    single = tmp_path / "single.csv"
    run_generation(tiny_model, test_sets, batched, tasks=["monolingual"], max_new_tokens=6, batch_size=3, progress=False)
    run_generation(tiny_model, test_sets, single, tasks=["monolingual"], max_new_tokens=6, batch_size=1, progress=False)
    # Left padding must not change greedy decoding.
    assert read_rows(batched) == read_rows(single)


def test_output_is_read_by_lcb_scorer(tiny_model, test_sets, tmp_path):
    from tlpo.metrics import read_completions

    out = tmp_path / "out.csv"
    run_generation(tiny_model, test_sets, out, max_new_tokens=6, batch_size=8, progress=False)
    completions = read_completions(out)
    assert len(completions) == 15
    assert {c.task for c in completions} == {"monolingual", "crosslingual"}


def test_rerun_after_interruption_equals_one_run(tiny_model, test_sets, tmp_path):
    whole = tmp_path / "whole.csv"
    resumed = tmp_path / "resumed.csv"
    run_generation(tiny_model, test_sets, whole, max_new_tokens=6, batch_size=4, progress=False)

    first = run_generation(tiny_model, test_sets, resumed, max_new_tokens=6, batch_size=4, max_batches=2, progress=False)
    assert first["generated"] == 8
    assert first["complete"] is False
    assert len(read_rows(resumed)) == 8

    second = run_generation(tiny_model, test_sets, resumed, max_new_tokens=6, batch_size=4, progress=False)
    assert second["reused"] == 8
    assert second["generated"] == 7
    assert resumed.read_bytes() == whole.read_bytes()

    third = run_generation(tiny_model, test_sets, resumed, max_new_tokens=6, batch_size=4, progress=False)
    assert third["generated"] == 0
    assert resumed.read_bytes() == whole.read_bytes()


def test_torn_last_record_is_rewritten(tiny_model, test_sets, tmp_path):
    whole = tmp_path / "whole.csv"
    torn = tmp_path / "torn.csv"
    run_generation(tiny_model, test_sets, whole, max_new_tokens=6, batch_size=4, progress=False)
    run_generation(tiny_model, test_sets, torn, max_new_tokens=6, batch_size=4, max_batches=2, progress=False)

    # Cut the file inside its last record, as a kill during a write would.
    data = torn.read_bytes()
    torn.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 5])
    completed, valid_bytes = read_completed_rows(torn, "tiny-chat")
    assert len(completed) == 7
    assert valid_bytes < len(torn.read_bytes())

    counts = run_generation(tiny_model, test_sets, torn, max_new_tokens=6, batch_size=4, progress=False)
    assert counts["reused"] == 7
    assert counts["generated"] == 8
    assert torn.read_bytes() == whole.read_bytes()


def test_resume_keeps_rows_of_other_selection(tiny_model, test_sets, tmp_path):
    out = tmp_path / "out.csv"
    run_generation(tiny_model, test_sets, out, languages=["ko"], max_new_tokens=4, batch_size=4, progress=False)
    run_generation(tiny_model, test_sets, out, languages=["ja"], max_new_tokens=4, batch_size=4, progress=False)
    rows = read_rows(out)
    assert sorted({r["language"] for r in rows}) == ["ja", "ko"]
    assert len(rows) == 8


def test_resume_rejects_other_model(tiny_model, test_sets, tmp_path):
    out = tmp_path / "out.csv"
    run_generation(tiny_model, test_sets, out, languages=["ja"], max_new_tokens=4, progress=False)
    with pytest.raises(ValueError, match="holds completions of model 'tiny-chat', not 'other'"):
        run_generation(tiny_model, test_sets, out, languages=["ja"], model_name="other", max_new_tokens=4, progress=False)


def test_resume_rejects_foreign_file(tiny_model, test_sets, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("prompt,answer\nhi,there\n", encoding="utf-8")
    with pytest.raises(ValueError, match="does not start with the LCB header"):
        run_generation(tiny_model, test_sets, out, languages=["ja"], max_new_tokens=4, progress=False)


def test_missing_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found: .*no-such-model"):
        load_model_and_tokenizer(tmp_path / "no-such-model")


def test_tokenizer_without_chat_template(tiny_model, test_sets, tmp_path):
    model, tokenizer = load_model_and_tokenizer(tiny_model)
    tokenizer.chat_template = None
    prompts = read_test_sets(test_sets, languages=["ja"])
    with pytest.raises(ValueError, match="no chat template"):
        generate_lcb_completions(
            prompts, tmp_path / "out.csv", tokenizer=tokenizer, generate_batch=None, model_name="m", progress=False
        )


def test_vllm_backend_missing_is_clear(tiny_model, test_sets, tmp_path):
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed; this test covers its absence")
    with pytest.raises(ImportError, match="the vllm backend needs the vllm package"):
        run_generation(tiny_model, test_sets, tmp_path / "out.csv", backend="vllm", progress=False)


def test_cli_killed_midway_then_rerun(tiny_model, test_sets, tmp_path):
    """Kill `tlpo lcb generate` with SIGKILL after its first batches, then rerun it."""
    reference = tmp_path / "reference.csv"
    run_generation(tiny_model, test_sets, reference, max_new_tokens=20, batch_size=1, progress=False)

    out = tmp_path / "out.csv"
    command = [
        sys.executable, "-m", "tlpo", "lcb", "generate",
        "--model", str(tiny_model), "--test-sets", str(test_sets), "--out", str(out),
        "--max-new-tokens", "20", "--batch-size", "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.02)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    process.wait()
    if not killed:
        pytest.fail(f"generation finished before it could be killed: {process.stderr.read().decode()}")
    partial_rows = out.read_bytes().count(b"\n") - 1
    assert 0 < partial_rows

    from tlpo.cli import main

    assert main(command[3:] + ["--no-progress"]) == 0
    assert out.read_bytes() == reference.read_bytes()


def test_model_folder_without_config(tmp_path):
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(FileNotFoundError, match="contains no config.json"):
        load_model_and_tokenizer(tmp_path / "empty-model")


def test_lora_adapter_folder_loads(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    adapter = get_peft_model(base, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    adapter_dir = tmp_path / "adapter"
    adapter.save_pretrained(adapter_dir)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(adapter_dir)
    assert not (adapter_dir / "config.json").exists()

    model, tokenizer = load_model_and_tokenizer(adapter_dir, device="cpu")
    assert model._hf_peft_config_loaded
    assert tokenizer.chat_template is not None


def test_cli_run_equals_score(tiny_model, test_sets, tmp_path, lcb_dir, capsys):
    from tlpo.cli import main

    out = tmp_path / "out.csv"
    common = ["--lcb-dir", str(lcb_dir), "--format", "tsv", "--no-progress"]
    run_code = main([
        "lcb", "run", "--model", str(tiny_model), "--test-sets", str(test_sets),
        "--out", str(out), "--max-new-tokens", "30", *common,
    ])
    run_table = capsys.readouterr().out
    score_code = main(["lcb", "score", str(out), *common])
    score_table = capsys.readouterr().out
    assert run_code == 0
    assert score_code == 0
    assert run_table == score_table
    assert run_table.startswith("task\tmodel\tsource\tlanguage\tlpr\twpr")
    assert "crosslingual\ttiny-chat\tokapi\tko\t" in run_table


def test_cli_missing_model_exit_code(test_sets, tmp_path, capsys):
    from tlpo.cli import main

    missing = tmp_path / "missing-model"
    code = main(["lcb", "generate", "--model", str(missing), "--test-sets", str(test_sets), "--out", str(tmp_path / "o.csv")])
    assert code == 2
    assert f"model folder not found: {missing}" in capsys.readouterr().err


def test_plan_batches_token_budget():
    from tlpo.lcb_generation import plan_batches

    lengths = [10, 300, 20, 300, 30, 40]
    prompt_ids = [[0] * n for n in lengths]
    assert plan_batches(prompt_ids, 4) == [[1, 3, 5, 4], [2, 0]]
    # Width 300 + 100 new tokens: two prompts fill the 800-token budget.
    assert plan_batches(prompt_ids, 4, max_new_tokens=100, max_batch_tokens=800) == [[1, 3], [5, 4, 2, 0]]
    # A prompt longer than the budget still gets a batch of its own.
    assert plan_batches(prompt_ids, 4, max_new_tokens=100, max_batch_tokens=100) == [[1], [3], [5], [4], [2], [0]]


def test_torn_header_is_rewritten(tiny_model, test_sets, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("id,model,compl", encoding="utf-8")
    counts = run_generation(tiny_model, test_sets, out, languages=["ja"], max_new_tokens=4, progress=False)
    assert counts["generated"] == 2
    assert out.read_text(encoding="utf-8").startswith("id,model,completion,task,source,language\n")
    assert len(read_rows(out)) == 2
