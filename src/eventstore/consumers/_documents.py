"""The document read model as handlers see it: JSON documents by key, in one projection's
generation, changed within the batch's transaction.

Reads go to the database once per key and batch (and lock the row, see the backends); writes
are kept here and written together when the batch commits, so a batch of many events costs a
few round trips. Each `get` returns a fresh copy: change it, then `put` it back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from eventstore.errors import ProjectionError
from eventstore.events import encode_json
from eventstore.store import ReadModelTransaction, check_find_value

_ABSENT = None


class Documents:
    """JSON documents by key (one projection, one generation), for handlers."""

    def __init__(self, transaction: ReadModelTransaction) -> None:
        self._tx = transaction
        self._texts: dict[str, str | None] = {}
        """What each key read or written so far holds (None: no document)."""
        self._absent: set[str] = set()
        """Keys the database had no document for when read in this batch."""
        self._dirty: set[str] = set()

    @property
    def projection(self) -> str:
        return self._tx.projection

    @property
    def generation(self) -> int:
        """The generation being written (tables of a projection's own should be keyed by it)."""
        return self._tx.generation

    @property
    def backend(self) -> str:
        return self._tx.backend

    @property
    def connection(self) -> Any:
        """The batch transaction's database connection (psycopg or sqlite3)."""
        return self._tx.connection

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read these keys in one round trip (the runner prefetches the batch's aggregate ids)."""
        wanted = [k for k in keys if k not in self._texts]
        if not wanted:
            return
        found = self._tx.load_documents(wanted)
        for key in wanted:
            text = found.get(key)
            self._texts[key] = text
            if text is None:
                self._absent.add(key)

    def get(self, key: str) -> Any | None:
        """The document stored under `key` (a fresh copy), or None."""
        self._check_key(key)
        if key not in self._texts:
            self.prefetch([key])
        text = self._texts[key]
        return None if text is None else json.loads(text)

    def put(self, key: str, document: Any) -> None:
        """Store `document` (anything JSON can hold) under `key`."""
        self._check_key(key)
        try:
            text = encode_json(document)
        except (TypeError, ValueError) as error:
            raise ProjectionError(
                f"projection {self.projection!r}: the document for key {key!r} is not JSON "
                f"({error}); store dicts, lists, strings, finite numbers, booleans and None"
            ) from None
        if "\\u0000" in text and _holds_nul(document):
            raise ProjectionError(
                f"projection {self.projection!r}: the document for key {key!r} holds a NUL "
                "character (\\u0000), which PostgreSQL cannot store; remove it"
            )
        self._texts[key] = text
        self._dirty.add(key)

    def update(
        self, key: str, change: Mapping[str, Any] | Callable[[dict[str, Any]], Any]
    ) -> dict[str, Any]:
        """Merge `change` into the document (a new empty one when absent), or call it with
        the document and store what it returns (or the document it changed in place)."""
        document = self.get(key) or {}
        if callable(change):
            result = change(document)
            document = document if result is None else result
        else:
            document.update(change)
        self.put(key, document)
        return document

    def delete(self, key: str) -> None:
        self._check_key(key)
        if key not in self._texts:
            self.prefetch([key])
        if self._texts.get(key) is not None:
            self._texts[key] = _ABSENT
            self._dirty.add(key)

    def find(self, field: str, value: Any, limit: int = 100) -> list[tuple[str, Any]]:
        """Documents whose top-level `field` equals `value` (a string, number, bool or None),
        as (key, document) by key, this batch's writes included."""
        check_find_value(field, value, f"projection {self.projection!r}: ")
        self.flush()
        return self._tx.find_documents(field, value, limit)

    def flush(self) -> None:
        """Write what changed (the runner calls this before the batch commits)."""
        if not self._dirty:
            return
        inserts: dict[str, str] = {}
        upserts: dict[str, str] = {}
        deletes: list[str] = []
        for key in self._dirty:
            text = self._texts[key]
            if text is None:
                if key not in self._absent:
                    deletes.append(key)
            elif key in self._absent:
                inserts[key] = text
            else:
                upserts[key] = text
        self._tx.write_documents(inserts, upserts, deletes)
        for key in inserts:
            self._absent.discard(key)
        for key in deletes:
            self._absent.add(key)
        self._dirty.clear()

    def _check_key(self, key: object) -> None:
        if not isinstance(key, str) or not key:
            raise ProjectionError(
                f"projection {self.projection!r}: a document key must be a non-empty string, "
                f"not {key!r}"
            )


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False
