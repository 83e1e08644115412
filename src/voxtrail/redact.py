"""Hiding secrets in text meant for people: URLs with passwords, in messages, logs and files.

Dependency-free, so the Recorder's transports and the CLI use the same rule as the store.
"""

from __future__ import annotations

import re

#: Query parameters holding a secret (a password, a private key's passphrase).
SECRET_PARAMS = frozenset({"password", "passwd", "sslpassword", "ssl_key_password"})

SECRET_QUERY = re.compile(r"(?<=[?&])(%s)=[^&]*" % "|".join(sorted(SECRET_PARAMS)), re.IGNORECASE)


def mask_url(text: str) -> str:
    """Hide the password of any URL-ish text (database, Redis, HTTP collector)."""
    text = re.sub(r"(://[^:/@]*):[^/]*@", r"\1:***@", text)  # up to the host's @: a password may hold one
    return SECRET_QUERY.sub(r"\1=***", text)
