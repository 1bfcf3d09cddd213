"""Storage: the platform records what it stores and frees; an admin sets the level to the truth."""

from .. import services
from ..auth import admin_write, service_write
from ..schemas.storage import (
    StorageBelowZeroSchema,
    StorageDeltaSchema,
    StorageExceededSchema,
    StorageReconcileSchema,
    StorageSchema,
)
from . import Blueprint, actor
from .idempotency import idempotent

blp = Blueprint("storage", __name__, description="What each client stores, kept within its storage quota.")
admin_blp = Blueprint("storage-reconcile", __name__, description="Setting a client's stored bytes to the truth.")


@blp.route("/<client_id:client_id>/storage", methods=["POST"])
@service_write
@blp.arguments(StorageDeltaSchema)
@blp.response(200, StorageSchema)
@blp.alt_response(402, schema=StorageExceededSchema, description="The delta would pass the storage quota; nothing changed.")
@idempotent(StorageSchema, conflict=(StorageBelowZeroSchema, "Freeing more than is stored; nothing changed."))
def move_storage(body, client_id, idempotency):
    """Add deltaBytes (negative: free them) to what the client stores, all or nothing, never past its
    storage quota (402) nor below zero (409: reconcile)."""
    return services.storage().move(client_id, body["delta_bytes"], body.get("reference"), idempotency)


@admin_blp.route("/<client_id:client_id>/storage", methods=["PUT"])
@admin_write
@admin_blp.arguments(StorageReconcileSchema)
@admin_blp.response(200, StorageSchema)
def reconcile_storage(body, client_id):
    """Set what the client stores to what the storage system holds; audited as storage_reconcile."""
    return services.storage().reconcile(actor(), client_id, body["used_bytes"], body["reason"])
