"""schemathesis hooks for the fuzz tests: a webhook endpoint it registers points at loopback.

Only a URL the service would accept is moved (to 127.0.0.1, port 9, where nothing listens), so
what the fuzzer meant as invalid stays invalid; no event can leave the machine.
"""

import re
from urllib.parse import urlsplit, urlunsplit

import schemathesis

from credits_service.schemas.webhooks import URL_MAX_LENGTH, URL_PATTERN

ACCEPTED = re.compile(URL_PATTERN)
LOOPBACK = "127.0.0.1:9"


@schemathesis.hook
def map_body(context, body):
    url = body.get("url") if isinstance(body, dict) else None
    if not (isinstance(url, str) and len(url) <= URL_MAX_LENGTH and ACCEPTED.fullmatch(url)):
        return body
    parts = urlsplit(url)
    moved = urlunsplit((parts.scheme, LOOPBACK, parts.path, parts.query, parts.fragment))
    return {**body, "url": moved[:URL_MAX_LENGTH]}
