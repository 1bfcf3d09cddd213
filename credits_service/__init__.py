"""credits-service: admin credit management and credit consumption, with an append-only audit log."""

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import api, auth, background, cli, database, errors, metrics, replica, request_id
from .audit.keys import load_audit_keys
from .config import Config
from .extensions import db, limiter
from .logs import configure_logging, register_access_log
from .services import health
from .services.api_keys import KeyCheckCache


def create_app(config: type[Config] | None = None) -> Flask:
    """The app for config (default: the environment's); ConfigurationError when it cannot start."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(config or Config.from_environment())
    if app.config["TRUSTED_PROXY_HOPS"]:
        # Behind a load balancer the client's address is the one it forwards, so per-address
        # rate limits and logs name the client, not the balancer.
        hops = app.config["TRUSTED_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    configure_logging(app)
    register_access_log(app)  # first: its clock starts before, and its line is written after, every other hook
    metrics.init_app(app)
    request_id.init_app(app)
    # Refuse to start rather than write an audit log nobody can prove.
    app.extensions["audit_keys"] = load_audit_keys(app)
    app.extensions["key_check_cache"] = KeyCheckCache(app.config["API_KEY_CACHE_SECONDS"])
    auth.init_app(app)

    database.configure_database(app)
    db.init_app(app)
    database.init_engine(app)
    replica.init_app(app)
    limiter.init_app(app)
    health.init_app(app)
    errors.init_app(app)
    api.init_app(app)
    cli.init_app(app)
    background.init_app(app)
    return app
