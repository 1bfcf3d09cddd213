"""`python -m credits_service.audit_dev_key`: make the development audit key unless one exists.

`make run` calls it before anything loads the app, which refuses to start without a key.
"""

import os

from flask import Flask

from .audit_keys import dev_key_path, make_dev_key



def main() -> None:
    if os.environ.get("AUDIT_HMAC_KEYS"):
        print("AUDIT_HMAC_KEYS is set: no development audit key needed.")
        return
    # The app's instance folder: the same import name gives the same path.
    key_file = dev_key_path(Flask("credits_service"))
    if make_dev_key(key_file):
        print(f"Made a development audit log key in {key_file} (set AUDIT_HMAC_KEYS in production).")


if __name__ == "__main__":
    main()
