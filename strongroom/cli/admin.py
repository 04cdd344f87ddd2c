"""init, whoami, users, keys and keyring commands."""

from __future__ import annotations

import os
from typing import Optional

import typer
from rich.table import Table

from strongroom.cli.common import acting, console, err_console, get_passphrase, home, print_json
from strongroom.crypto import EnvKeyProvider, PassphraseProvider
from strongroom.errors import BadInput
from strongroom.runtime import init_home

users_app = typer.Typer(help="Manage users (admin; needs --otp).", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys (admin; needs --otp).", no_args_is_help=True)
keyring_app = typer.Typer(help="Key-encryption keys: status and rotation.", no_args_is_help=True)


def init(
    admin: str = typer.Option("admin", help="Name of the first admin user."),
    key_provider: str = typer.Option(
        "passphrase", help="passphrase (Argon2id from STRONGROOM_PASSPHRASE or a prompt) or env "
        "(a raw 32-byte key in STRONGROOM_MASTER_KEY)."),
    as_json: bool = typer.Option(False, "--json", help="Print the admin's key and TOTP secret as JSON."),
) -> None:
    """Create a Strongroom home (STRONGROOM_HOME, default ~/.strongroom) and its first admin.

    The admin's API key and TOTP secret are printed once and never stored in plaintext.
    """
    if key_provider == "passphrase":
        passphrase = os.environ.get("STRONGROOM_PASSPHRASE")
        if not passphrase:
            passphrase = get_passphrase()
            if passphrase != typer.prompt("Repeat passphrase", hide_input=True):
                raise BadInput("the passphrases do not match")
        provider = PassphraseProvider.create(passphrase)
    elif key_provider == "env":
        provider = EnvKeyProvider.from_env()
    else:
        raise BadInput("--key-provider must be 'passphrase' or 'env'")
    result = init_home(home(), provider, admin)
    if as_json:
        print_json(result)
        return
    console.print(f"Initialised Strongroom home at {result['home']}")
    console.print("Store these now; they are not shown again:")
    console.print(f"  STRONGROOM_API_KEY={result['api_key']}")
    console.print(f"  TOTP secret: {result['totp_secret']}  ({result['totp_uri']})")


def whoami(as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the principal that STRONGROOM_API_KEY authenticates as."""
    with acting() as (_rt, p):
        info = {"id": p.id, "name": p.name, "kind": p.kind, "roles": list(p.roles),
                "scope": list(p.scope), "mfa": p.has_mfa}
    if as_json:
        print_json(info)
    else:
        console.print(f"{p.name} ({p.id}) roles={','.join(p.roles)}"
                      + (f" scope={','.join(p.scope)}" if p.scope else ""))


@users_app.command("add")
def users_add(
    name: str,
    role: list[str] = typer.Option(..., "--role", help="Role(s): admin, data-steward, ml-engineer, analyst, auditor, app."),
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the new user's password from stdin."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a user; prints the user's TOTP secret once."""
    password = None
    if password_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\n")
    with acting() as (rt, p):
        rt.door.check(p, "user:admin", action="user.create")
        rt.require_otp(p, otp, "user.create")
        user, secret = rt.identity.create_user(name, role, password)
        rt.door.record(p, "user.create", resource=f"user:{user.id}", details={"name": name},
                       public={"roles": role})
    out = {"id": user.id, "name": name, "roles": role, "totp_secret": secret}
    if as_json:
        print_json(out)
    else:
        console.print(f"Created user {name} ({user.id}); TOTP secret (shown once): {secret}")


@users_app.command("list")
def users_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List users (admin or auditor)."""
    with acting() as (rt, p):
        rt.door.check(p, "user:admin", action="user.list")
        rows = [{"id": u.id, "name": u.name, "roles": list(u.roles), "disabled": u.disabled,
                 "locked_until": str(u.locked_until or "")} for u in rt.identity.list_users()]
        rt.door.record(p, "user.list", public={"count": len(rows)})
    _print_rows(rows, as_json, "Users")


@keys_app.command("create")
def keys_create(
    role: list[str] = typer.Option(..., "--role", help="Role(s) the key carries."),
    scope: list[str] = typer.Option([], "--scope", help="Restrict to resources, e.g. dataset:claims."),
    expires: Optional[str] = typer.Option(None, "--expires", help="Lifetime such as 30d, 12h, 90m."),
    user: Optional[str] = typer.Option(None, "--user", help="Bind the key to this user."),
    description: str = typer.Option("", "--description"),
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create an API key; the key is printed once and stored only as a hash."""
    with acting() as (rt, p):
        key, plaintext = rt.create_api_key(p, roles=role, scope=scope, expires=expires, user=user,
                                           otp=otp, description=description)
    out = {"id": key.id, "key": plaintext, "roles": role, "scope": scope,
           "expires_at": str(key.expires_at) if key.expires_at else None}
    if as_json:
        print_json(out)
    else:
        console.print(f"Created key {key.id} (shown once): {plaintext}")


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List API keys with their state (never the keys themselves)."""
    with acting() as (rt, p):
        rt.door.check(p, "key:admin", action="key.list")
        rows = []
        for k in rt.identity.list_api_keys():
            rows.append({"id": k.id, "roles": list(k.roles), "scope": list(k.scope or []),
                         "state": k.status, "expires_at": str(k.expires_at or ""),
                         "last_used_at": str(k.last_used_at or ""), "description": k.description})
        rt.door.record(p, "key.list", public={"count": len(rows)})
    _print_rows(rows, as_json, "API keys")


@keys_app.command("revoke")
def keys_revoke(
    key_id: str,
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
) -> None:
    """Revoke an API key at once."""
    with acting() as (rt, p):
        rt.door.check(p, "key:admin", action="key.revoke")
        rt.require_otp(p, otp, "key.revoke")
        rt.identity.revoke_api_key(key_id)
        rt.door.record(p, "key.revoke", resource=f"key:{key_id}", severity="warning")
    console.print(f"Revoked {key_id}")


@keyring_app.command("rotate")
def keyring_rotate(otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code.")) -> None:
    """Add a new KEK version, re-wrap every data key under it, retire the old version."""
    with acting() as (rt, p):
        rt.door.check(p, "keyring:rotate", action="keyring.rotate")
        rt.require_otp(p, otp, "keyring.rotate")
        version = rt.keyring.rotate()
        rt.door.record(p, "keyring.rotate", resource=f"kek:v{version}", severity="warning",
                       public={"new_version": version})
    console.print(f"Rotated: KEK version {version} is active; data keys re-wrapped")


@keyring_app.command("status")
def keyring_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """KEK versions, their age and how many data keys each wraps."""
    with acting() as (rt, p):
        rt.door.check(p, "keyring:rotate", action="keyring.status")
        status = rt.keyring.status()
        rt.door.record(p, "keyring.status")
    print_json(status) if as_json else console.print(status)


def _print_rows(rows: list[dict], as_json: bool, title: str) -> None:
    if as_json:
        print_json(rows)
        return
    if not rows:
        err_console.print(f"No {title.lower()}.")
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col)
    for r in rows:
        table.add_row(*[", ".join(v) if isinstance(v, list) else str(v) for v in r.values()])
    console.print(table)


def login(
    name: str,
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    ttl: str = typer.Option("12h", "--ttl", help="Lifetime of the session key."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Log in with password + TOTP; prints a short-lived API key bound to the user.

    10 failed logins lock the account for 30 minutes. Needs no STRONGROOM_API_KEY.
    """
    from strongroom.cli.common import runtime

    if password_stdin:
        password = typer.get_text_stream("stdin").readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    with runtime() as rt:
        key, plaintext = rt.login(name, password, otp or "", ttl)
    if as_json:
        print_json({"id": key.id, "key": plaintext, "expires_at": str(key.expires_at)})
    else:
        console.print(f"Session key {key.id} (expires {key.expires_at}): {plaintext}")
