"""``strongroom breakglass``: emergency access with a second approver and a time box."""

from __future__ import annotations

from typing import Optional

import typer

from strongroom.cli.common import acting, console, err_console, print_json

app = typer.Typer(help="Emergency (break-glass) access: request, approve by a second admin, "
                       "activate a time-boxed key, revoke.", no_args_is_help=True)


@app.command("request")
def request(
    role: list[str] = typer.Option(..., "--role", help="Role needed (repeatable)."),
    reason: str = typer.Option(..., "--reason", help="Why (sealed; the audit log keeps an HMAC)."),
    ttl: Optional[str] = typer.Option(None, "--ttl", help="Time box, e.g. 30m, 1h (default 1h, max 8h)."),
    scope: list[str] = typer.Option([], "--scope", help="Limit to dataset:NAME / model:NAME (repeatable)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Ask for emergency roles; another admin must approve."""
    from strongroom.compliance.breakglass import BreakGlassService

    with acting() as (rt, p):
        out = BreakGlassService(rt).request(p, roles=role, scope=scope, ttl=ttl, reason=reason)
    if as_json:
        print_json(out)
    else:
        console.print(f"Break-glass request {out['id']} for {', '.join(out['roles'])} "
                      f"({out['ttl_seconds'] // 60} min): a second admin must run "
                      f"'strongroom breakglass approve {out['id']} --otp CODE'")


def _decide(request_id: str, otp: Optional[str], approve: bool, as_json: bool) -> None:
    from strongroom.compliance.breakglass import BreakGlassService

    with acting() as (rt, p):
        out = BreakGlassService(rt).decide(p, request_id, otp=otp, approve=approve)
    if as_json:
        print_json(out)
    else:
        console.print(f"Break-glass request {request_id} {out['status']}")


@app.command("approve")
def approve(
    request_id: str,
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Approve a pending request (a different admin user than the requester; TOTP)."""
    _decide(request_id, otp, True, as_json)


@app.command("deny")
def deny(
    request_id: str,
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Deny a pending request."""
    _decide(request_id, otp, False, as_json)


@app.command("activate")
def activate(
    request_id: str,
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The requester receives the time-boxed API key (shown once)."""
    from strongroom.compliance.breakglass import BreakGlassService

    with acting() as (rt, p):
        g = BreakGlassService(rt).activate(p, request_id, otp=otp)
    if as_json:
        print_json({"request_id": g.request_id, "key_id": g.key_id, "api_key": g.api_key,
                    "roles": g.roles, "expires_at": g.expires_at})
    else:
        console.print(f"Break-glass key {g.key_id} ({', '.join(g.roles)}) until {g.expires_at}; "
                      "shown once, every use is reviewed:")
        console.print(g.api_key)


@app.command("revoke")
def revoke(request_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """End a request or an active grant now (the requester or an admin)."""
    from strongroom.compliance.breakglass import BreakGlassService

    with acting() as (rt, p):
        out = BreakGlassService(rt).revoke(p, request_id)
    if as_json:
        print_json(out)
    else:
        console.print(f"Break-glass request {request_id} revoked"
                      + (f"; key {out['key_id']} revoked" if out["key_id"] else ""))


@app.command("list")
def list_(
    reasons: bool = typer.Option(False, "--reasons", help="Show the (sealed) reasons too."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Requests and grants (admins see all; others their own)."""
    from strongroom.compliance.breakglass import BreakGlassService

    with acting() as (rt, p):
        rows = BreakGlassService(rt).list(p, show_reasons=reasons)
    if as_json:
        print_json(rows)
        return
    if not rows:
        err_console.print("No break-glass requests.")
    for r in rows:
        console.print(f"{r['id']}  {r['status']:9} {','.join(r['roles']):20} by {r['requester']}  "
                      f"{r['created_at'][:19]}" + (f"  reason: {r['reason']}" if reasons else ""))
