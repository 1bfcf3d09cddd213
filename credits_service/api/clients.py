"""Clients: create, list, read, delete."""

from .. import services
from ..auth import admin_read, admin_write
from ..schemas.clients import ClientCreateSchema, ClientPageSchema, ClientSchema
from ..schemas.common import PageQuerySchema
from . import Blueprint, actor

blp = Blueprint("clients", __name__, description="Clients and the plan each is on.")


@blp.route("", methods=["POST"])
@admin_write
@blp.arguments(ClientCreateSchema)
@blp.response(201, ClientSchema)
@blp.alt_response(409, response="CONFLICT", description="A client with this id already exists.")
def create_client(body):
    """Create a client on a plan (free unless given) with that plan's default limits."""
    return services.clients().create_client(actor(), body["name"], body.get("id"), body.get("plan", "free"))


@blp.route("", methods=["GET"])
@admin_read
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, ClientPageSchema)
def list_clients(query):
    """List clients, oldest first; nextOffset is null on the last page."""
    return services.clients(replica=True).list_clients(query["limit"], query["offset"])


@blp.route("/<client_id:client_id>", methods=["GET"])
@admin_read
@blp.response(200, ClientSchema)
def get_client(client_id):
    """One client."""
    return services.clients().get_client(client_id)


@blp.route("/<client_id:client_id>", methods=["DELETE"])
@admin_write
@blp.response(204)
def delete_client(client_id):
    """Delete a client with its quota, usage and audit log."""
    services.clients().delete_client(actor(), client_id)
