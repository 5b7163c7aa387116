"""The ``benchsvc`` command line: the only place that knows about exit codes and terminal output."""


def main() -> None:
    from benchsvc.cli.app import run

    run()
