"""The nightly job as a cron line or a systemd user timer + service (``benchsvc schedule``)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchsvc.errors import BenchsvcError

UNIT_NAME = "benchsvc-nightly"
_TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class ScheduleError(BenchsvcError):
    """The schedule cannot be written or installed as asked."""


@dataclass(frozen=True)
class NightlyJob:
    hour: int
    minute: int
    command: tuple[str, ...]
    workdir: Path
    log: Path

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)

    def cron_line(self) -> str:
        return (
            f"{self.minute} {self.hour} * * * cd {shlex.quote(str(self.workdir))} && "
            f"{self.command_line} >> {shlex.quote(str(self.log))} 2>&1"
        )

    def service_unit(self) -> str:
        return (
            "[Unit]\n"
            "Description=benchsvc nightly benchmark run (run + report)\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"WorkingDirectory={self.workdir}\n"
            f"ExecStart={self.command_line}\n"
            "# SIGTERM marks the run interrupted; benchsvc run --resume finishes it\n"
            "TimeoutStopSec=60\n"
        )

    def timer_unit(self) -> str:
        return (
            "[Unit]\n"
            "Description=benchsvc nightly benchmark run\n\n"
            "[Timer]\n"
            f"OnCalendar=*-*-* {self.hour:02d}:{self.minute:02d}:00\n"
            "Persistent=true\n\n"
            "[Install]\n"
            "WantedBy=timers.target\n"
        )


def nightly_job(
    at: str, db: str | None, extra_args: tuple[str, ...] = (), workdir: Path | None = None
) -> NightlyJob:
    """The job for ``benchsvc run --trigger nightly`` at ``at`` (HH:MM, local time) on the given database."""
    m = _TIME_RE.match(at)
    if not m:
        raise ScheduleError(f"--at {at!r} is not a time of day (use HH:MM, e.g. 02:30)")
    from benchsvc.store.db import resolve_url

    url = resolve_url(db)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{Path(url[len('sqlite:///') :]).resolve()}"  # cron runs elsewhere: absolute path
    exe = shutil.which("benchsvc")
    program = (exe,) if exe else (sys.executable, "-m", "benchsvc")
    command = (*program, "run", "--trigger", "nightly", "--db", url, *extra_args)
    wd = (workdir or Path.cwd()).resolve()
    return NightlyJob(int(m.group(1)), int(m.group(2)), command, wd, wd / "benchsvc-nightly.log")


def install_timer(job: NightlyJob, unit_dir: Path | None = None) -> list[str]:
    """Write the user units and enable the timer; returns what was done, line by line."""
    target = unit_dir or Path.home() / ".config" / "systemd" / "user"
    target.mkdir(parents=True, exist_ok=True)
    service, timer = target / f"{UNIT_NAME}.service", target / f"{UNIT_NAME}.timer"
    service.write_text(job.service_unit())
    timer.write_text(job.timer_unit())
    done = [f"wrote {service}", f"wrote {timer}"]
    systemctl = shutil.which("systemctl")
    enable = ["systemctl", "--user", "enable", "--now", f"{UNIT_NAME}.timer"]
    if systemctl is None:
        raise ScheduleError(
            f"wrote {service} and {timer}, but systemctl is not installed: enable the timer with "
            f"`{shlex.join(enable)}` where systemd runs, or use the cron line (benchsvc schedule)"
        )
    for cmd in (["systemctl", "--user", "daemon-reload"], enable):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            why = (proc.stderr or proc.stdout).strip().splitlines()
            raise ScheduleError(
                f"wrote {service} and {timer}, but `{shlex.join(cmd)}` failed: {why[-1] if why else proc.returncode}"
                " (no systemd user session here? use the cron line instead)"
            )
        done.append(f"ran {shlex.join(cmd)}")
    return done
