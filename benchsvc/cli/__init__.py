def main() -> None:
    from benchsvc.cli.app import run

    run()
