"""lineage findings are the versions' character: status ``character`` instead of ``new``

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-08 01:10:00

A lineage finding (a version against its parent inside one run) says what the version is; it was filed as
``new`` and so kept ``benchsvc regressions --fail-on-regression`` failing after every first night. Open
lineage findings not yet acknowledged become ``character``: listed, not queued for acknowledgement. The
status column is a plain string, so no schema change is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text("UPDATE regressions SET status = 'character' WHERE axis = 'lineage' AND status = 'new'")
    )


def downgrade() -> None:
    op.execute(
        sa.text("UPDATE regressions SET status = 'new' WHERE axis = 'lineage' AND status = 'character'")
    )
