"""benchsvc schedule: the cron line and systemd units it prints, --at validation, --install without systemd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchsvc.schedule import nightly_job


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_job_runs_benchsvc_run_nightly_on_an_absolute_database(tmp_path: Path):
    job = nightly_job("03:07", "results.db", workdir=tmp_path)
    assert (job.hour, job.minute) == (3, 7)
    assert job.command[-5:] == (
        "run",
        "--trigger",
        "nightly",
        "--db",
        f"sqlite:///{Path('results.db').resolve()}",
    )
    cron = job.cron_line()
    assert cron.startswith("7 3 * * * cd ")
    assert cron.endswith(f">> {tmp_path.resolve() / 'benchsvc-nightly.log'} 2>&1")
    assert "OnCalendar=*-*-* 03:07:00" in job.timer_unit()
    assert "Persistent=true" in job.timer_unit()
    assert f"ExecStart={job.exec_start}" in job.service_unit()
    assert "Type=oneshot" in job.service_unit()


def test_postgres_url_is_kept_as_given():
    job = nightly_job("02:30", "postgresql://bench@db.example/benchsvc")
    assert job.command[-1] == "postgresql+psycopg://bench@db.example/benchsvc"


def test_schedule_prints_cron_and_units():
    proc = _cli("schedule", "--at", "01:15", "--db", "/tmp/x.db", "--quick")
    assert proc.returncode == 0, proc.stderr
    assert "15 1 * * * cd " in proc.stdout
    assert "--db sqlite:////tmp/x.db --quick" in proc.stdout
    assert "[Timer]" in proc.stdout and "[Service]" in proc.stdout


def test_schedule_passes_the_engine_on_to_the_nightly_run():
    proc = _cli("schedule", "--db", "/tmp/x.db", "--engine", "all")
    assert proc.returncode == 0, proc.stderr
    assert "run --trigger nightly --db sqlite:////tmp/x.db --engine all >> " in proc.stdout
    assert "ExecStart=" in proc.stdout and proc.stdout.count("--engine all") == 2  # cron line and unit
    bad = _cli("schedule", "--engine", "qemu")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["Error: unknown engine 'qemu' (one of: sim, kernel, all)"]


def test_bad_time_is_one_line_error():
    proc = _cli("schedule", "--at", "25:00")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: --at '25:00' is not a time of day (use HH:MM, e.g. 02:30)"
    ]


def test_install_without_systemctl_writes_units_and_says_what_to_do(tmp_path: Path):
    env = dict(os.environ, HOME=str(tmp_path), PATH=str(Path(sys.executable).parent))  # no systemctl on PATH
    proc = _cli("schedule", "--install", "--db", str(tmp_path / "x.db"), env=env, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: wrote ")
    assert "systemctl --user enable --now benchsvc-nightly.timer" in lines[0]
    unit_dir = tmp_path / ".config" / "systemd" / "user"
    assert "OnCalendar=*-*-* 02:30:00" in (unit_dir / "benchsvc-nightly.timer").read_text()
    assert "run --trigger nightly" in (unit_dir / "benchsvc-nightly.service").read_text()


# --- escaping for cron and systemd; control characters; HOME and the unit path ----------------------------

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

from benchsvc.schedule import NightlyJob  # noqa: E402

AWKWARD = [
    "postgresql://bench:p%40ss%2Fw@db.example/benchsvc",  # a %-encoded password
    "sqlite:////tmp/with space/$HOME/`id`/x.db",
    'it\'s "quoted" \\ and %% and \\% and ; and &&',
    "%n%H%4%%",  # systemd specifiers, and cron's newline
    "$(touch /tmp/pwned) ${USER} $$",
]


def _echo_job(tmp_path: Path, arg: str) -> NightlyJob:
    """A job whose program prints its arguments as JSON (instead of running benchsvc)."""
    program = (sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))")
    return NightlyJob(2, 30, (*program, "--db", arg), tmp_path, tmp_path / "log")


def _as_cron_runs_it(line: str) -> tuple[str, str]:
    """What cron runs for a crontab line (crontab(5)): the sixth field on is the command; an unescaped ``%``
    ends it (what follows is standard input, lines split at further ``%``), ``\\%`` is a literal ``%``."""
    command = line.split(None, 5)[5]
    out, i = [], 0
    while i < len(command):
        if command.startswith("\\%", i):
            out.append("%")
            i += 2
        elif command[i] == "%":
            return "".join(out), command[i + 1 :].replace("%", "\n")
        else:
            out.append(command[i])
            i += 1
    return "".join(out), ""


@pytest.mark.parametrize("arg", AWKWARD)
def test_the_cron_line_gives_the_program_its_arguments_unchanged(tmp_path: Path, arg: str) -> None:
    job = _echo_job(tmp_path, arg)
    line = job.cron_line()
    assert "\n" not in line
    command, stdin = _as_cron_runs_it(line)
    assert stdin == "", "cron would cut the command at a %"
    subprocess.run(["/bin/sh", "-c", command], input="", check=True, timeout=60, cwd="/")
    assert json.loads((tmp_path / "log").read_text()) == ["--db", arg]
    assert not Path("/tmp/pwned").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("arg", AWKWARD)
def test_systemd_accepts_the_service_unit(tmp_path: Path, arg: str) -> None:
    work = tmp_path / "work %n dir"
    work.mkdir()
    job = NightlyJob(2, 30, (sys.executable, "-m", "benchsvc", "run", "--db", arg), work, work / "log")
    unit = tmp_path / "benchsvc-nightly.service"
    unit.write_text(job.service_unit())
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to resolve" not in proc.stderr and "Ignoring" not in proc.stderr, proc.stderr
    # the check can fail: the argument as it was written before (unescaped) is rejected where it has a %
    if re.search(r"%[0-9A-Za-z]", arg.replace("%%", "")):
        unit.write_text(job.service_unit().replace(job.exec_start, shlex_join(job.command)))
        bad = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert bad.returncode != 0


def shlex_join(args: tuple[str, ...]) -> str:
    import shlex

    return shlex.join(args)


@pytest.mark.parametrize(
    "db", ["/tmp/x.db\nExecStartPre=/bin/sh -c id", "/tmp/x\r.db", "/tmp/\x1b[2Jx.db", "/tmp/x\x7f.db"]
)
def test_a_control_character_in_db_is_refused(db: str) -> None:
    proc = _cli("schedule", "--db", db)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --db ") and "control character" in lines[0], lines
    assert "ExecStartPre" not in proc.stdout and proc.stdout == ""


@pytest.mark.parametrize("home", ["", None, "a-file", "relative/home"])
def test_install_with_a_bad_home_is_one_line(tmp_path: Path, home: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOME"}
    env["PATH"] = str(Path(sys.executable).parent)
    if home == "a-file":
        (tmp_path / "a-file").write_text("x")
        env["HOME"] = str(tmp_path / "a-file")
    elif home is not None:
        env["HOME"] = home
    proc = _cli("schedule", "--install", "--db", str(tmp_path / "x.db"), env=env, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: HOME "), lines
    assert (
        not list(tmp_path.rglob(".config"))
        and not Path("/.config/systemd/user/benchsvc-nightly.service").exists()
    )


def test_install_with_a_directory_at_the_unit_path_is_one_line(tmp_path: Path) -> None:
    unit_dir = tmp_path / ".config" / "systemd" / "user"
    (unit_dir / "benchsvc-nightly.service").mkdir(parents=True)
    env = dict(os.environ, HOME=str(tmp_path), PATH=str(Path(sys.executable).parent))
    proc = _cli("schedule", "--install", "--db", str(tmp_path / "x.db"), env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"Error: {unit_dir / 'benchsvc-nightly.service'} is not a regular file — remove it (benchsvc writes "
        "the unit there), or use the cron line (benchsvc schedule)"
    ]
    assert (unit_dir / "benchsvc-nightly.service").is_dir()
