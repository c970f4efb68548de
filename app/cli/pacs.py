"""``radcheck pacs ...``: pull studies from a configured PACS node."""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from typing import Annotated

import typer

__all__ = ["pacs_cli"]

pacs_cli = typer.Typer(
    help="Pull studies from a configured PACS (RADCHECK_PACS__NODES).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@pacs_cli.command("retrieve")
def retrieve(
    node: Annotated[str | None, typer.Option(help="The node's name (optional with one)")] = None,
    study: Annotated[str | None, typer.Option(help="Study Instance UID")] = None,
    accession: Annotated[str | None, typer.Option(help="Accession number")] = None,
) -> None:
    """Fetch a study (QIDO-RS + WADO-RS, or C-FIND + C-GET / C-MOVE) into RadCheck's store; prints the job as JSON."""
    from app.cli.main import fail, settings_or_exit
    from app.db.session import Database
    from app.services.errors import InvalidInputError
    from app.services.ingest import decode_limits
    from app.services.pacs_retrieve import (
        claim_retrieval,
        create_retrieval,
        resolve_node,
        run_retrieval,
    )
    from app.services.storage import ContentStore

    settings = settings_or_exit()
    db = Database(settings.database_url, pool_size=settings.database.pool_size)
    try:
        try:
            target = resolve_node(settings.pacs, node)
            view = db.run(
                lambda s: create_retrieval(
                    s,
                    target,
                    study_instance_uid=study,
                    accession_number=accession,
                    actor="cli",
                )
            )
        except InvalidInputError as exc:
            fail(str(exc))
        worker_id = f"cli:{socket.gethostname()}:{os.getpid()}"
        lease = timedelta(seconds=settings.worker.lease_s)
        with db.session() as session:
            claimed = claim_retrieval(
                session, worker_id=worker_id, lease=lease, retrieval_id=view.id
            )
        if claimed is None:  # a worker took it first: it runs there
            typer.echo(json.dumps(view.__dict__, indent=2))
            raise typer.Exit(1)
        result = run_retrieval(
            db,
            ContentStore(settings.files_dir),
            target,
            view.id,
            calling_ae_title=settings.pacs.calling_ae_title,
            worker_id=worker_id,
            lease=lease,
            limits=decode_limits(settings),
        )
        typer.echo(json.dumps(result.__dict__, indent=2))
        if result.status != "succeeded":
            raise typer.Exit(1)
    finally:
        db.dispose()
