"""The audit log: one keyed hash chain per client, written with each change, verified and read.

chain   the canonical encoding and the HMAC that links each entry to the one before
keys    the HMAC keys: AUDIT_HMAC_KEYS, or a development key file
trail   appending an entry (in the caller's transaction) and advancing the client's head
verify  recomputing every chain against the stored heads and, optionally, saved anchors
reader  one client's page, a search across clients
export  the search as a CSV or NDJSON file, streamed
"""
