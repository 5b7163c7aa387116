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
        """The command for a POSIX shell (what the cron line runs, without cron's ``%`` escaping)."""
        return shlex.join(self.command)

    def cron_line(self) -> str:
        """The crontab line: shell-quoted, then every ``%`` escaped as ``\\%`` (cron turns an unescaped ``%``
        into a newline and feeds the rest to the command's standard input; it drops the backslash of ``\\%``)."""
        line = (
            f"cd {shlex.quote(str(self.workdir))} && {self.command_line} >> {shlex.quote(str(self.log))} 2>&1"
        )
        return f"{self.minute} {self.hour} * * * " + line.replace("%", "\\%")

    @property
    def exec_start(self) -> str:
        """The command for systemd's ``ExecStart=`` (:func:`systemd_quote` of every argument)."""
        return " ".join(systemd_quote(a) for a in self.command)

    def service_unit(self) -> str:
        return (
            "[Unit]\n"
            "Description=benchsvc nightly benchmark run (run + report)\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"WorkingDirectory={str(self.workdir).replace('%', '%%')}\n"  # a path: no quotes, specifiers
            f"ExecStart={self.exec_start}\n"
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


_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def systemd_quote(arg: str) -> str:
    """One argument as systemd reads it back from a unit file (systemd.syntax, systemd.service "Command
    lines", systemd.unit "Specifiers"): ``%`` is a specifier, so ``%%``; ``$`` expands variables, so ``$$``;
    anything beyond plain characters in double quotes, with ``\\`` and ``"`` backslash-escaped. Control
    characters are refused earlier (:func:`check_printable`)."""
    if _SYSTEMD_PLAIN.fullmatch(arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_printable(what: str, value: str) -> None:
    """Refuse a value with a newline or another control character: in a crontab or a unit file it would end
    the line and start another (an injected ``ExecStartPre=``, a second cron job)."""
    m = _CONTROL.search(value)
    if m:
        raise ScheduleError(
            f"{what} {value!r} contains a control character ({m.group()!r}), which would break the cron line "
            "and the unit file — give it without"
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
    check_printable("--db", url)
    for arg in extra_args:
        check_printable("argument", arg)
    check_printable("the program", " ".join(program))
    check_printable("the working directory", str(wd))
    return NightlyJob(int(m.group(1)), int(m.group(2)), command, wd, wd / "benchsvc-nightly.log")


def _home() -> Path:
    """``$HOME``, refused unless it is set to an absolute path of an existing directory (an empty HOME would
    put the units under ``/.config``)."""
    import os

    home = os.environ.get("HOME", "")
    if not home:
        problem = "is not set" if "HOME" not in os.environ else "is empty"
    elif not os.path.isabs(home):
        problem = f"is {home!r}, not an absolute path"
    elif not os.path.isdir(home):
        problem = f"is {home}, which is not a directory"
    else:
        return Path(home)
    raise ScheduleError(
        f"HOME {problem}, so there is no ~/.config/systemd/user for the units — set HOME to your home "
        "directory, or use the cron line (benchsvc schedule)"
    )


def install_timer(job: NightlyJob, unit_dir: Path | None = None) -> list[str]:
    """Write the user units and enable the timer; returns what was done, line by line."""
    target = unit_dir or _home() / ".config" / "systemd" / "user"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScheduleError(
            f"cannot create the unit directory {target}: {exc.strerror or exc} — check that it (and HOME) "
            "are directories you can write, or use the cron line (benchsvc schedule)"
        ) from None
    service, timer = target / f"{UNIT_NAME}.service", target / f"{UNIT_NAME}.timer"
    for path, text in ((service, job.service_unit()), (timer, job.timer_unit())):
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ScheduleError(
                f"{path} is not a regular file — remove it (benchsvc writes the unit there), or use the "
                "cron line (benchsvc schedule)"
            )
        try:
            path.write_text(text)
        except OSError as exc:
            raise ScheduleError(
                f"cannot write {path}: {exc.strerror or exc} — check the directory, or use the cron line "
                "(benchsvc schedule)"
            ) from None
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
