"""`w2v --help` and every sub-command's help are complete: a description, an example, and a
help text for every option and argument."""

from __future__ import annotations

import argparse

import pytest

from w2v.cli import build_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_help_lists_every_subcommand():
    text = build_parser().format_help()
    assert "examples:" in text
    for name in _subcommands():
        assert name in text, name
    helps = {a.dest: a.help for a in build_parser()._actions if not isinstance(a, argparse._SubParsersAction)}
    assert all(helps.values()), helps


def test_every_subcommand_has_help_for_each_option():
    subs = _subcommands()
    choices = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))._choices_actions
    summaries = {c.dest: c.help for c in choices}
    assert len(subs) >= 12
    for name, sub in subs.items():
        assert summaries.get(name), f"{name}: no one-line summary in `w2v --help`"
        assert sub.description and len(sub.description) > 20, f"{name}: no description"
        assert sub.epilog and f"w2v {name}" in sub.epilog, f"{name}: no example epilog"
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"w2v {name} {'/'.join(action.option_strings) or action.dest}"


@pytest.mark.parametrize("name", sorted(set(_subcommands()) - {"bench"}))
def test_help_prints(name, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: w2v {name}") and "example:" in out


@pytest.mark.parametrize("what", ["gpu", "data"])
def test_bench_help_is_the_benchmarks_own(what, capsys):
    """`w2v bench [data] --help` passes --help on to the benchmark, which lists its options."""
    from w2v.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", what, "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out
