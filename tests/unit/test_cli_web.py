"""`eventstore tokens` and `eventstore serve`'s refusals, as a user types them, on the
embedded store (a SQLite file of the test's own)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from eventstore import open_store
from eventstore.web import verify_token
from tests.integration.web_defs import assert_problem, new_event, serving
from tests.unit.test_cli import run

TOKEN = re.compile(r"est_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tokens.db'}"


def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    done = run(tmp_path, *args, env={"EVENTSTORE_DATABASE_URL": database(tmp_path)})
    return done.returncode, done.stdout, done.stderr


def create(tmp_path: Path, name: str, *scopes: str) -> str:
    code, out, err = cli(tmp_path, "tokens", "create", name, *[f"--scope={s}" for s in scopes])
    assert code == 0, err
    found = TOKEN.findall(out)
    assert len(found) == 1, out
    return str(found[0])


def database_bytes(tmp_path: Path) -> bytes:
    """Everything the store has on disk (the file and its write-ahead log)."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("tokens.db*")))


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_create_prints_the_token_once_and_stores_only_a_digest(tmp_path: Path) -> None:
    code, out, err = cli(tmp_path, "tokens", "create", "game-server", "--scope", "read")
    assert code == 0, err
    tokens = TOKEN.findall(out)
    assert len(tokens) == 1, f"the token is printed exactly once: {out}"
    token = tokens[0]
    assert TOKEN.fullmatch(token)
    assert "game-server" in out and "read" in out
    secret = token.split("_", 2)[2]
    with open_store(database(tmp_path)) as store:
        (stored,) = store.list_tokens()
        assert (stored.name, stored.scopes) == ("game-server", ("read",))
        assert stored.token_id == token.split("_")[1]
        assert secret not in stored.digest and stored.digest != secret
        assert verify_token(store, token) == stored
    assert secret.encode() not in database_bytes(tmp_path), "the secret itself was stored"


def test_create_with_scopes_and_json(tmp_path: Path) -> None:
    code, out, err = cli(
        tmp_path, "tokens", "create", "deployer", "--scope", "read", "--scope", "append", "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown.keys() == {"name", "scopes", "token"}
    assert shown["name"] == "deployer"
    assert shown["scopes"] == ["append", "read"]
    assert TOKEN.fullmatch(shown["token"]), shown
    with open_store(database(tmp_path)) as store:
        assert verify_token(store, shown["token"]).scopes == ("append", "read")


def test_list_never_shows_a_secret_or_a_digest(tmp_path: Path) -> None:
    first = create(tmp_path, "alpha", "read", "admin")
    second = create(tmp_path, "bravo", "append")
    with open_store(database(tmp_path)) as store:
        digests = [t.digest for t in store.list_tokens()]

    code, table, err = cli(tmp_path, "tokens", "list")
    assert code == 0, err
    code, listed, err = cli(tmp_path, "tokens", "list", "--json")
    assert code == 0, err
    rows = json.loads(listed)
    assert [(r["name"], r["id"], r["scopes"]) for r in rows] == [
        ("alpha", first.split("_")[1], ["admin", "read"]),
        ("bravo", second.split("_")[1], ["append"]),
    ]
    assert all(r.keys() == {"name", "id", "scopes", "created_at", "revoked_at"} for r in rows)
    assert "alpha" in table and "bravo" in table
    for text in (table, listed):
        for token in (first, second):
            assert token.split("_", 2)[2] not in text, "a secret is shown"
        for digest in digests:
            assert digest not in text, "a digest is shown"


def test_revoke_then_the_token_is_refused(tmp_path: Path) -> None:
    token = create(tmp_path, "writer", "read", "append")
    headers = {"Authorization": f"Bearer {token}"}
    with serving(tmp_path, database(tmp_path), "--no-anonymous-reads") as served:
        url = served.url()
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/v1/info", headers=headers).status_code == 200
            posted = client.post("/v1/events", json=new_event("p-1", 1), headers=headers)
            assert posted.status_code == 200, posted.text

            code, out, err = cli(tmp_path, "tokens", "revoke", "writer")
            assert code == 0, err
            assert out.strip() == "revoked writer"

            for response in (
                client.get("/v1/info", headers=headers),
                client.post("/v1/events", json=new_event("p-1", 2), headers=headers),
            ):
                body = assert_problem(response, 401, "unauthorized")
                assert "revoked" in body["detail"]
                assert response.headers["www-authenticate"].startswith("Bearer")
    code, listed, _ = cli(tmp_path, "tokens", "list", "--json")
    assert json.loads(listed) == []
    code, listed, _ = cli(tmp_path, "tokens", "list", "--revoked", "--json")
    assert [(r["name"], r["revoked_at"] is not None) for r in json.loads(listed)] == [
        ("writer", True)
    ]


def test_revoking_an_unknown_name_is_one_error_line(tmp_path: Path) -> None:
    create(tmp_path, "real", "read")
    code, _, err = cli(tmp_path, "tokens", "revoke", "ghost")
    assert code != 0
    assert "ghost" in one_error_line(err)
    code, _, err = cli(tmp_path, "tokens", "revoke", "real")
    assert code == 0, err
    code, _, err = cli(tmp_path, "tokens", "revoke", "real")
    assert code != 0, "a revoked token cannot be revoked again"
    assert "real" in one_error_line(err)


@pytest.mark.parametrize("scope", ["write", "READ", "read,append", ""])
def test_an_unknown_scope_is_refused_clearly(tmp_path: Path, scope: str) -> None:
    code, out, err = cli(tmp_path, "tokens", "create", "bad", "--scope", "read", "--scope", scope)
    assert code != 0
    line = one_error_line(err)
    assert "scope" in line and "read, append, admin" in line, line
    assert TOKEN.search(out + err) is None, "no token may be printed"
    assert json.loads(cli(tmp_path, "tokens", "list", "--revoked", "--json")[1]) == []


def test_a_live_name_is_taken_until_revoked(tmp_path: Path) -> None:
    create(tmp_path, "ci", "read")
    code, out, err = cli(tmp_path, "tokens", "create", "ci", "--scope", "append")
    assert code != 0
    assert "ci" in one_error_line(err) and TOKEN.search(out) is None
    assert cli(tmp_path, "tokens", "revoke", "ci")[0] == 0
    create(tmp_path, "ci", "append")


def test_serve_beyond_loopback_refuses_anonymous_reads(tmp_path: Path) -> None:
    create(tmp_path, "reader", "read")  # a live token: anonymous reads are the only reason
    code, out, err = cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", "0", "--anonymous-reads")
    assert code == 2, (out, err)
    line = one_error_line(err)
    assert "0.0.0.0" in line and "anonymous reads" in line, line
    assert "serving" not in out


@pytest.mark.parametrize("flags", [[], ["--no-anonymous-reads"]])
def test_serve_beyond_loopback_refuses_while_no_live_token_exists(
    tmp_path: Path, flags: list[str]
) -> None:
    args = ("serve", "--host", "0.0.0.0", "--port", "0", *flags)
    code, out, err = cli(tmp_path, *args)
    assert code == 2, (out, err)
    assert "no token exists" in one_error_line(err)
    create(tmp_path, "gone", "read")
    assert cli(tmp_path, "tokens", "revoke", "gone")[0] == 0
    code, out, err = cli(tmp_path, *args)
    assert code == 2, "a revoked token does not count"
    assert "no token exists" in one_error_line(err)

    # With a live token it serves, and beyond loopback every request needs one.
    token = create(tmp_path, "reader", "read")
    with serving(tmp_path, database(tmp_path), "--host", "0.0.0.0", *flags) as served:
        with httpx.Client(base_url=served.url(), timeout=30) as client:
            assert_problem(client.get("/v1/log"), 401, "unauthorized")
            read = client.get("/v1/log", headers={"Authorization": f"Bearer {token}"})
            assert read.status_code == 200, read.text
            assert client.get("/v1/health").json()["status"] == "ok"
        assert "every request needs a token" in " ".join("".join(served.stdout).split())
