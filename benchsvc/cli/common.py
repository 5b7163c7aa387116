"""Options shared by the commands that use the result database."""

from __future__ import annotations

from typing import Annotated

import typer

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database: a SQLite file path or a URL (sqlite:///..., postgresql://...). "
        "Default: $BENCHSVC_DB, else ./benchsvc.db.",
        show_default=False,
    ),
]
