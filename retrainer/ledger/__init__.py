"""Service state in Azure Table Storage (Azurite locally): one client per aggregate, one table each.

As `TableServiceClient.get_table_client` gives one client per table, `Ledger` gives one per aggregate:
`images` (each image version once, and where it is), `labels` (labels waiting for their image), `runs`
(the service's record of each run), `slot` (the submission slot and the failure streak) and `champion`
(the champion's history). Tables are named `<LEDGER_TABLE_PREFIX><name>`.

Every write that must not race is conditional on an ETag (or an insert that fails when the row exists), so
concurrent handlers on many instances agree. Every frequent read is a key range, so its cost does not grow with
history (Table Storage answers a filter on any other property by scanning the whole partition). A ledger
written with the first layout is moved into this one by `retrainer/ledger_migration.py`, once, outside the hot
path; nothing here reads that layout.
"""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient

from retrainer.datastore import TABLE_CLIENT_OPTIONS
from retrainer.ledger.champion import ChampionHistory
from retrainer.ledger.images import ImageLedger
from retrainer.ledger.labels import WaitingLabels
from retrainer.ledger.rows import TableService
from retrainer.ledger.runs import RunLedger
from retrainer.ledger.slot import SubmissionSlot
from retrainer.settings import Settings
from shared.identity import signed_in_credential


class Ledger:
    """The ledger's five tables, one client each."""

    def __init__(self, service: TableService, table_prefix: str) -> None:
        self.images = ImageLedger(service.get_table_client(f"{table_prefix}images"))
        self.labels = WaitingLabels(service.get_table_client(f"{table_prefix}labels"))
        self.runs = RunLedger(service.get_table_client(f"{table_prefix}runs"))
        self.slot = SubmissionSlot(service.get_table_client(f"{table_prefix}control"))
        self.champion = ChampionHistory(service.get_table_client(f"{table_prefix}champion"))

    @classmethod
    def from_connection_string(cls, connection_string: str, table_prefix: str) -> Ledger:
        return cls(TableServiceClient.from_connection_string(connection_string, **TABLE_CLIENT_OPTIONS), table_prefix)

    @classmethod
    def from_settings(cls, settings: Settings) -> Ledger:
        """The ledger's tables, by connection string or keyless by identity."""
        connection = settings.storage_connection()
        if connection.connection_string is not None:
            return cls.from_connection_string(connection.connection_string, settings.LEDGER_TABLE_PREFIX)
        service = TableServiceClient(
            endpoint=str(connection.table_service_uri),
            credential=signed_in_credential(connection.client_id),
            **TABLE_CLIENT_OPTIONS,
        )
        return cls(service, settings.LEDGER_TABLE_PREFIX)

    def ensure_tables(self) -> None:
        for client in (self.labels, self.images, self.runs, self.slot, self.champion):
            with contextlib.suppress(ResourceExistsError):
                client.table.create_table()
