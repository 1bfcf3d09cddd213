"""The ceiling: the smallest WSGI app gunicorn can serve, answering a JSON body like the service's."""

BODY = b'{"generationCount":1,"limit":2147483647,"month":"2026-11","remaining":2147483646}'


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
