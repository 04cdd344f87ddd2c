"""Supply-chain evidence: the installed environment matches the pinned lock file."""

from __future__ import annotations

from strongroom.compliance.checks.base import Context, Evidence, check, fail, ok
from strongroom.compliance.sbom import installed, pin_problems, read_pins

MAX_LISTED = 12


@check("supply-chain.pinned", "Dependencies are pinned and installed as pinned",
       "importlib.metadata of the running interpreter (what the CycloneDX SBOM lists) against "
       "requirements.txt (every line an exact '==' pin) and the Makefile's pinned extra installs: "
       "every pin installed at its version, nothing installed that is pinned nowhere, no package "
       "declared in requirements.in but missing from the lock.")
def pinned(ctx: Context) -> tuple[str, str, list[Evidence]]:
    pins = read_pins()
    problems, stats = pin_problems(pins, installed())
    ev = [Evidence("installed distributions", stats["installed"]),
          Evidence("exact pins (requirements.txt + Makefile)", stats["pinned"]),
          Evidence("pins not matched by the installed version", stats["mismatched"]),
          Evidence("installed but pinned nowhere", stats["unpinned_installs"]),
          Evidence("SBOM", "strongroom compliance sbom -o FILE (CycloneDX 1.6 JSON)")]
    if problems:
        ev.extend(Evidence("problem", p) for p in problems[:MAX_LISTED])
        if len(problems) > MAX_LISTED:
            ev.append(Evidence("further problems", len(problems) - MAX_LISTED))
        return fail(f"{len(problems)} supply-chain problem(s): {problems[0]}", ev)
    return ok(f"all {stats['installed']} installed distributions are pinned and match", ev)
