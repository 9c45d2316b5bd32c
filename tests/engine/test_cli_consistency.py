"""The command line behaves the same everywhere (issue 16, item 6): ``-v`` before or after the
subcommand, the top-level help lists what each subcommand says of itself, help imports nothing
heavy (it answers in about a tenth of a second), and Ctrl-C says what resumes and what cannot."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from train_pipeline.cli import COMMANDS, build_parser, interrupted_message

HEAVY = ("requests", "urllib3", "pydantic", "yaml", "prefect", "torch", "transformers", "tqdm", "resumable.transfer")


def _imported_by(args: list[str]) -> list[str]:
    """The heavy modules ``train-pipeline ARGS`` has imported when it exits (help exits early)."""
    code = ("import sys, json\nfrom train_pipeline.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_top_level_help_imports_no_subcommand():
    assert _imported_by(["--help"]) == []


@pytest.mark.parametrize("args", [["fetch", "--help"], ["datasets", "--help"], ["model", "--help"]])
def test_subcommand_help_imports_nothing_heavy(args):
    assert _imported_by(args) == []


def test_the_listed_help_is_the_subcommands_own():
    import importlib

    for name, (module, help_text) in COMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        own = {a.dest: a.help for a in sub._choices_actions}
        assert own[name] == help_text, name


@pytest.mark.parametrize("argv", [
    ["-v", "fetch", "http://h/x", "-o", "x"],
    ["fetch", "-v", "http://h/x", "-o", "x"],
    ["fetch", "http://h/x", "-o", "x", "--verbose"],
    ["datasets", "-v", "list"],
    ["datasets", "list", "-v"],
    ["datasets", "download", "custom", "--urls", "http://h/x", "-v"],
    ["model", "download", "org/name", "-v"],
])
def test_verbose_before_or_after_the_subcommand(argv):
    args = build_parser(next(a for a in argv if not a.startswith("-"))).parse_args(argv)
    assert args.verbose is True


def test_verbose_is_off_unless_given():
    assert build_parser("fetch").parse_args(["fetch", "http://h/x", "-o", "x"]).verbose is False
    assert build_parser("datasets").parse_args(["datasets", "list"]).verbose is False


@pytest.mark.parametrize("argv", [["fetch", "http://h/x", "-o", "x", "-q"], ["datasets", "download", "x", "-q"],
                                  ["model", "download", "org/name", "-q"]])
def test_quiet_has_the_short_spelling_everywhere(argv):
    assert build_parser(argv[0]).parse_args(argv).quiet is True


def test_interrupted_names_servers_that_cannot_resume(monkeypatch):
    import resumable.attempt as attempt

    monkeypatch.setattr(attempt, "_NO_RANGES", {})
    assert interrupted_message() == "interrupted: partial downloads are kept and resume on the next run"
    attempt.note_no_ranges("http://127.0.0.1:8000/big.bin")
    assert interrupted_message().endswith(", except from http://127.0.0.1:8000, which serves no byte ranges: "
                                          "those downloads start over from byte 0")


@pytest.mark.slow
def test_datasets_download_says_run_again_only_for_what_a_rerun_fixes(served, tmp_path):
    """A file that is gone (404) needs another URL; one whose server is busy (503) needs a re-run."""
    srv, root = served
    (root / "busy.bin").write_bytes(b"x" * 1000)
    srv.fault("busy.bin", status=503, times=None)
    r = subprocess.run([sys.executable, "-m", "train_pipeline.cli", "datasets", "download", "mixed", "--urls",
                        srv.url("gone.bin"), srv.url("busy.bin"), "--retries", "0", "-q", "--data-dir",
                        str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "2 of 2 file(s) failed" in line and "HTTP 404" in line and "HTTP 503" in line
    assert line.endswith("; check the URLs given with --urls; then run the same command again to resume the others")
    assert "Traceback" not in r.stderr


def test_a_fetch_loads_neither_the_hub_code_nor_unused_optional_imports(served, tmp_path):
    """``fetch`` of a plain URL imports no Hub code, no tornado (tenacity's optional support) and no
    charset detection (requests' optional guessing): start-up time, bench scenario 8. The same
    process can still import them afterwards."""
    srv, root = served
    (root / "f.bin").write_bytes(b"x" * 1000)
    code = ("import sys, json\nfrom train_pipeline.cli import main\n"
            f"rc = main(['fetch', {srv.url('f.bin')!r}, '-o', {str(tmp_path / 'f.bin')!r}, '-q'])\n"
            "loaded = [m for m in ('tornado', 'charset_normalizer', 'chardet', 'asyncio', 'resumable.hub') "
            "if m in sys.modules]\n"
            "import tornado, charset_normalizer, requests\n"
            "print(json.dumps([rc, loaded, requests.get.__module__]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == [0, [], "requests.api"]
    assert "Warning" not in out.stderr and (tmp_path / "f.bin").read_bytes() == b"x" * 1000
