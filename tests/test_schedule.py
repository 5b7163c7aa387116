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
    assert f"ExecStart={job.command_line}" in job.service_unit()
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
