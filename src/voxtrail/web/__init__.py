"""voxtrail's web app (``voxtrail serve``): dashboard, audit pages, admin, HTTP ingest, /metrics.

:func:`voxtrail.web.app.create_app` builds the FastAPI application from
:class:`voxtrail.web.settings.WebSettings`. Pages and APIs are routers in their own modules,
included from one list in :mod:`voxtrail.web.app`; every route except the login page, the
health check and static files requires a session (:func:`voxtrail.web.auth.require_user`) or
an API token.
"""
