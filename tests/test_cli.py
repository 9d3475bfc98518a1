import subprocess
import sys

import pytest

from tlpo.cli import COMMANDS, build_parser, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    output = capsys.readouterr().out
    for name in COMMANDS:
        assert name in output


@pytest.mark.parametrize("name", list(COMMANDS))
def test_subcommand_help_exits_zero(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert f"tlpo {name}" in capsys.readouterr().out


def test_full_parser_registers_every_module():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert set(choices) == set(COMMANDS)


def test_unknown_subcommand_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["no-such-command"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_lcb_score_imports_no_torch():
    # Scoring must start fast, so the `lcb` command may not pull in torch or transformers.
    code = (
        "import sys\n"
        "from tlpo.cli import main\n"
        "try:\n"
        "    main(['lcb', 'score', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "tlpo", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("tlpo ")


def test_train_without_output_dir(capsys):
    assert main(["train"]) == 2
    assert "missing --output-dir" in capsys.readouterr().err


def test_train_resume_from_missing_folder(tmp_path, capsys):
    missing = tmp_path / "checkpoint-9"
    assert main(["train", "--output-dir", str(tmp_path / "run"), "--resume_from_checkpoint", str(missing)]) == 2
    assert f"checkpoint folder not found: {missing}" in capsys.readouterr().err


def test_closed_stdout_pipe_prints_no_traceback(tmp_path):
    # Many reports, read by a consumer that stops after the first line, as `| head -1` does.
    lines = "".join('{"text": "오늘은 날씨가 맑아요.", "language": "ko"}\n' for _ in range(20000))
    (tmp_path / "many.jsonl").write_text(lines, encoding="utf-8")
    producer = subprocess.Popen(
        [sys.executable, "-m", "tlpo", "detect", "--jsonl", str(tmp_path / "many.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first_line = producer.stdout.readline()
    producer.stdout.close()
    stderr = producer.stderr.read().decode()
    producer.wait(timeout=120)
    assert first_line.startswith(b"{")
    assert "Traceback" not in stderr


def test_yaml_exponent_numbers_are_floats(tmp_path):
    from tlpo.cli import read_yaml_mapping

    path = tmp_path / "config.yaml"
    path.write_text("learning_rate: 1e-5\nrun_name: 3e4-run\ndpo: {beta: 5E-1}\n", encoding="utf-8")
    values = read_yaml_mapping(path, "TLPOConfig")
    # PyYAML alone reads 1e-5 as the string "1e-5".
    assert values["learning_rate"] == 1e-5
    assert values["dpo"]["beta"] == 0.5
    assert values["run_name"] == "3e4-run"
