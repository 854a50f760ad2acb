"""The ``dlfund`` command's launcher (dlfund_command): when it re-executes with huge pages, and when it leaves the
environment alone."""

import sys

import pytest

import dlfund_command
from dlfund_command import HUGE_PAGES, tuned_environment

LINUX = dict(system="linux", glibc=(2, 36), thp="madvise")


def test_it_adds_huge_pages_on_linux_with_a_recent_glibc_and_keeps_other_tunables():
    assert tuned_environment({"PATH": "/bin"}, **LINUX) == {"PATH": "/bin", "GLIBC_TUNABLES": HUGE_PAGES}
    assert tuned_environment({}, **{**LINUX, "thp": "always"})["GLIBC_TUNABLES"] == HUGE_PAGES
    kept = tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **LINUX)
    assert kept["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGE_PAGES}"


@pytest.mark.parametrize(
    ("environ", "platform"),
    [
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, LINUX),  # the user's choice stands (and no exec loop)
        ({"DLFUND_MALLOC": "default"}, LINUX),  # opted out
        ({}, {**LINUX, "system": "darwin"}),
        ({}, {**LINUX, "glibc": None}),  # musl, say
        ({}, {**LINUX, "glibc": (2, 34)}),  # before the tunable existed
        ({}, {**LINUX, "thp": "never"}),
        ({}, {**LINUX, "thp": None}),
    ],
)
def test_it_leaves_the_environment_alone_where_the_setting_does_not_apply(environ, platform):
    assert tuned_environment(environ, **platform) is None


def test_main_re_executes_python_m_dlfund_with_the_same_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(dlfund_command, "tuned_environment", lambda environ: {"GLIBC_TUNABLES": HUGE_PAGES})
    monkeypatch.setattr(dlfund_command.os, "execve", lambda *a: calls.append(a) or sys.exit(0))
    monkeypatch.setattr(sys, "argv", ["dlfund", "train", "--epochs", "2"])
    with pytest.raises(SystemExit):
        dlfund_command.main()
    assert calls == [(sys.executable, [sys.executable, "-m", "dlfund", "train", "--epochs", "2"],
                      {"GLIBC_TUNABLES": HUGE_PAGES})]  # fmt: skip


def test_main_runs_the_command_itself_when_nothing_applies_or_exec_fails(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dlfund", "--help"])
    for environment, execve in ((None, None), ({"X": "1"}, OSError("exec not allowed"))):
        monkeypatch.setattr(dlfund_command, "tuned_environment", lambda environ, env=environment: env)

        def refuse(*a, error=execve):
            raise error

        monkeypatch.setattr(dlfund_command.os, "execve", refuse)
        with pytest.raises(SystemExit) as exit_:
            dlfund_command.main()
        assert exit_.value.code == 0 and "dlfund" in capsys.readouterr().out
