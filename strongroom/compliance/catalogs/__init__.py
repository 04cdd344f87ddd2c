"""Control catalogs as data files: one TOML file per framework, loaded and validated here.

Why data files: an auditor or compliance officer can read and review what each control is
mapped to without reading code, and a new framework is a new file. Loading validates every
control against the registry of automated checks, so a typo in a catalog fails loudly rather
than silently evidencing nothing.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

from strongroom.errors import BadInput, StrongroomError

FRAMEWORKS: tuple[str, ...] = ("hipaa", "gdpr", "pci", "ccpa")


@dataclass(frozen=True)
class Control:
    """One control: its id in the framework, a short title and text, and the evidencing checks."""

    id: str
    title: str
    text: str
    checks: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    """A framework's controls, in the order the catalog file lists them."""

    id: str
    title: str
    source: str
    version: str
    controls: tuple[Control, ...]

    def check_ids(self) -> set[str]:
        """Every automated check any control of this framework relies on."""
        return {c for control in self.controls for c in control.checks}


def parse_frameworks(value: str) -> tuple[str, ...]:
    """``hipaa|gdpr|pci|ccpa|all`` (or a comma list) -> framework ids; BadInput otherwise."""
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not names:
        raise BadInput("--framework needs one of hipaa, gdpr, pci, ccpa, all")
    if "all" in names:
        return FRAMEWORKS
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        raise BadInput(f"unknown framework {unknown[0]!r} (known: {', '.join(FRAMEWORKS)}, all)")
    return tuple(dict.fromkeys(names))


def load_catalog(framework: str, known_checks: set[str] | None = None) -> Catalog:
    """Read ``<framework>.toml``; with ``known_checks``, every mapped check must exist."""
    if framework not in FRAMEWORKS:
        raise BadInput(f"unknown framework {framework!r} (known: {', '.join(FRAMEWORKS)})")
    try:
        raw = tomllib.loads(resources.files(__name__).joinpath(f"{framework}.toml").read_text("utf-8"))
        meta = raw["framework"]
        controls = tuple(
            Control(id=str(c["id"]), title=str(c["title"]), text=str(c["text"]),
                    checks=tuple(str(x) for x in c["checks"]))
            for c in raw["controls"]
        )
        catalog = Catalog(id=str(meta["id"]), title=str(meta["title"]), source=str(meta["source"]),
                          version=str(meta["version"]), controls=controls)
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise StrongroomError(f"control catalog {framework!r} is malformed ({type(exc).__name__})") from None
    if catalog.id != framework or not catalog.controls:
        raise StrongroomError(f"control catalog {framework!r} has a wrong id or no controls")
    ids = [c.id for c in catalog.controls]
    if len(set(ids)) != len(ids):
        raise StrongroomError(f"control catalog {framework!r} repeats a control id")
    for control in catalog.controls:
        if not control.checks:
            raise StrongroomError(f"control {framework}:{control.id} names no automated check")
        if known_checks is not None:
            missing = [c for c in control.checks if c not in known_checks]
            if missing:
                raise StrongroomError(f"control {framework}:{control.id} names unknown check {missing[0]!r}")
    return catalog
