"""The HTTP API and the time-travel page (`eventstore serve`).

Importing `eventstore` never imports this package: FastAPI and uvicorn load only here.
"""

from __future__ import annotations

from eventstore.web._app import ApiOptions, create_app
from eventstore.web._auth import SCOPES, issue_token, verify_token

__all__ = ["SCOPES", "ApiOptions", "create_app", "issue_token", "verify_token"]
