"""The one Jinja2 environment every router renders with (``templates.TemplateResponse``).

Every template sees ``current_user`` (a :class:`~voxtrail.store.accounts.User` or None),
``csrf_token()`` for forms, and ``has_role(role)`` for showing what the user may open.
Autoescaping is on: event texts are user input and are never trusted as HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from voxtrail.store.accounts import role_rank
from voxtrail.web.csrf import csrf_token

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")


def _context(request: Request) -> dict[str, Any]:
    # Only what the route's dependencies already looked up: rendering does no database I/O.
    session = getattr(request.state, "vx_session", None)
    user = session.user if session is not None else None
    return {
        "current_user": user,
        "csrf_token": lambda: csrf_token(request),
        "has_role": lambda role: user is not None and role_rank(user.role) >= role_rank(role),
    }


templates = Jinja2Templates(directory=TEMPLATES_DIR, context_processors=[_context])
