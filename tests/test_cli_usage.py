"""What a new user meets first: the commands of README.md and docs/ as written, --help, flag checks, and a
test suite that leaves nothing behind."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def test_no_test_makes_its_own_temporary_files():
    """The tempfile module's folders outlive the run in /tmp, unless made inside pytest's tmp_path (dir=...)."""
    offenders = [path.name for path in sorted(TESTS.glob("*.py"))
                 if re.search(r"\btempfile\.(mkdtemp|mkstemp|NamedTemporaryFile|TemporaryDirectory)\((?![^)]*\bdir=)",
                              path.read_text(encoding="utf-8"))]
    assert offenders == []


def refusal(capsys, *argv: str) -> str:
    """The last line argparse prints when it refuses argv (exit status 2), checking the usage is the verb's."""
    from edge.cli import main

    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: edge {argv[0]} "), err
    return err.strip().splitlines()[-1]


WHOLE, NUMBER = "a whole number of at least", "a number of at least"


@pytest.mark.parametrize("command, expected", [
    ("run m --input test:// --fps -1", f"{NUMBER} 0"),
    ("run m --input test:// --fps nan", f"{NUMBER} 0"),
    ("run m --input test:// --width 0", f"{WHOLE} 1"),
    ("run m --input test:// --height -5", f"{WHOLE} 1"),
    ("run m --input test:// --top 0", f"{WHOLE} 1"),
    ("run m --input test:// --workers -1", f"{WHOLE} 0"),
    ("run m --input test:// --smoothing 0", f"{WHOLE} 1"),
    ("classify m x.jpg --top 0", f"{WHOLE} 1"),
    ("calibrate m --images x --count 0", f"{WHOLE} 1"),
    ("profile m --frames 0", f"{WHOLE} 1"),
    ("profile m --workers two", f"{WHOLE} 0"),
    ("build m --workspace 0", f"{WHOLE} 1"),
])
def test_out_of_range_numbers_are_refused_the_same_way_by_every_verb(capsys, command, expected):
    argv = command.split()
    flag, value = argv[-2:]
    assert refusal(capsys, *argv) == f"edge {argv[0]}: error: argument {flag}: expected {expected}, got {value!r}"


def test_an_out_of_range_number_in_the_config_file_is_refused(tmp_path):
    from edge.errors import EdgeError
    from edge.runtime.options import resolve_options

    config = tmp_path / "edge.toml"
    config.write_text('model = "m"\ninput = "test://"\nfps = -1\n')
    with pytest.raises(EdgeError, match=r"edge\.toml: fps must be at least 0, not -1\.0$"):
        resolve_options(config, {})


def test_an_unknown_flag_after_a_verb_shows_that_verbs_usage(capsys):
    last = refusal(capsys, "eval", "m", "--list", "x", "--limt", "3")
    assert last == "edge eval: error: unrecognized arguments: --limt 3"


def option_defaults():
    """(verb, flag, the default it has, its help text) for every option of every verb."""
    import argparse

    from edge.cli import build_parser
    from edge.runtime.options import OPTIONS_BY_KEY

    _, verbs = build_parser()
    for verb, parser in verbs.items():
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            default = action.default
            if verb == "run" and action.dest in OPTIONS_BY_KEY:  # None here: the config file may set it
                default = OPTIONS_BY_KEY[action.dest].default
            yield verb, action.option_strings[-1], default, action.help or ""


def test_help_shows_every_default():
    missing = []
    for verb, flag, default, help_text in option_defaults():
        if default in (None, False, ""):
            continue
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        if "default" not in help_text or shown not in help_text:
            missing.append(f"edge {verb} {flag} (default {shown}): {help_text!r}")
    assert missing == []


ROOT = TESTS.parent
SHELL_FENCES = ("```", "```sh", "```bash", "```shell", "```console")


def shell_lines(text: str):
    """The lines inside the fenced blocks of a Markdown text that are shell or plain (not python, json, ...)."""
    opener = None
    for line in text.splitlines():
        if line.startswith("```"):
            opener = line.strip() if opener is None else None
        elif opener in SHELL_FENCES:
            yield line


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every `edge` command in the shell blocks of README.md and docs/*.md: comments and
    `&&` chains split off, `sudo` and a venv's path dropped, [optional] parts included, a|b taking a."""
    commands = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in shell_lines(path.read_text(encoding="utf-8")):
            for command in re.sub(r"\s#\s.*", "", line).split("&&"):
                words = shlex.split(re.sub(r"\[([^]|]*)[^]]*\]", r"\1", command))
                if words[:1] == ["sudo"]:
                    words = words[1:]
                if words and Path(words[0]).name == "edge":
                    commands.append((f"{path.relative_to(ROOT)}: {command.strip()}", words[1:]))
    return commands


def test_the_documented_commands_parse_as_written():
    from edge.cli import parse

    commands = documented_commands()
    assert len(commands) > 20  # the walk finds them (README.md alone has 20)
    refused = []
    for where, argv in commands:
        try:
            parse(argv)
        except SystemExit:
            refused.append(where)
    assert refused == []


def test_counts_in_messages_agree_with_their_number():
    from edge.words import plural

    assert [plural(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert plural(1, "class", "classes") == "1 class" and plural(4, "class", "classes") == "4 classes"


def test_choosing_one_image_fewer_than_asked_says_1_image(tmp_path):
    import cv2
    import numpy as np

    from edge.errors import EdgeError
    from edge.precision import choose_images

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(EdgeError, match=r": 1 image, fewer than the 2 asked for$"):
        choose_images(tmp_path, 2)
