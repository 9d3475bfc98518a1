import subprocess
import sys

from tlpo.cli import main


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    output = capsys.readouterr().out
    assert "lcb" in output
    assert "detect" in output


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "tlpo", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("tlpo ")
