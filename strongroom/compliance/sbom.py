"""Supply chain: a CycloneDX SBOM of the installed environment, and the pins it must match.

Why from the installed environment and not from requirements.txt: the SBOM must describe what
actually runs (including anything installed by hand), and the pin check then compares the two.
The embedded base model weights are components too (type machine-learning-model, with their
SHA-256), since they shape every answer the system gives.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import sys
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from strongroom.errors import StrongroomError

SPEC_VERSION = "1.6"
#: Installed by the interpreter's venv bootstrap, not by the project: outside the pin check.
BOOTSTRAP = frozenset({"pip", "setuptools", "wheel"})
PROJECT = "strongroom"


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_root() -> Path:
    """Where requirements.txt and the Makefile live (the source tree of this installation)."""
    return Path(__file__).resolve().parents[2]


@dataclass
class Pins:
    """Exact pins from the lock file and the Makefile's extra installs, plus malformed lines."""

    source: dict[str, str] = field(default_factory=dict)  # name -> file it is pinned in
    version: dict[str, str] = field(default_factory=dict)
    unpinned_lines: list[str] = field(default_factory=list)
    declared_not_locked: list[str] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([A-Za-z0-9.+!_-]+)\s*(;.*)?$")


def read_pins(root: Path | None = None) -> Pins:
    """Parse requirements.txt (every line must be ``name==version``), the Makefile's
    ``pip install ... name==version`` lines, and requirements.in (to spot lock drift)."""
    root = root or project_root()
    pins = Pins()
    lock = root / "requirements.txt"
    if not lock.is_file():
        pins.missing_files.append("requirements.txt")
    else:
        for n, raw in enumerate(lock.read_text("utf-8").splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            m = _PIN.match(line.split(" --hash", 1)[0].strip())
            if not m:
                pins.unpinned_lines.append(f"requirements.txt:{n}")
                continue
            name = canonical_name(m.group(1))
            pins.version[name], pins.source[name] = m.group(3), "requirements.txt"
    make = root / "Makefile"
    if make.is_file():
        for raw in make.read_text("utf-8").splitlines():
            if "pip install" not in raw:
                continue
            for tok in raw.split():
                m = _PIN.match(tok)
                if m and canonical_name(m.group(1)) not in pins.version:
                    name = canonical_name(m.group(1))
                    pins.version[name], pins.source[name] = m.group(3), "Makefile"
    declared = root / "requirements.in"
    if declared.is_file():
        for raw in declared.read_text("utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
            if m and canonical_name(m.group(1)) not in pins.version:
                pins.declared_not_locked.append(canonical_name(m.group(1)))
    return pins


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    license: str
    summary: str


def installed() -> list[Installed]:
    """Every distribution importable by this interpreter, sorted by normalised name."""
    seen: dict[str, Installed] = {}
    for dist in md.distributions():
        meta = dist.metadata
        name = meta.get("Name")
        if not name:
            continue
        key = canonical_name(name)
        if key in seen:
            continue  # first on sys.path wins, as for imports
        lic = meta.get("License-Expression") or ""
        if not lic:
            classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                           if c.startswith("License ::")]
            lic = classifiers[0] if classifiers else (meta.get("License") or "").split("\n")[0][:80]
        seen[key] = Installed(key, dist.version, lic.strip(), (meta.get("Summary") or "").strip())
    return [seen[k] for k in sorted(seen)]


def pin_problems(pins: Pins, dists: list[Installed]) -> tuple[list[str], dict[str, int]]:
    """What breaks 'dependencies stay pinned': unpinned or mismatched installs, loose lines."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion

    problems: list[str] = [f"{f} not found" for f in pins.missing_files]
    problems += [f"{line} is not an exact '==' pin" for line in pins.unpinned_lines]
    have = {d.name: d.version for d in dists}
    mismatched = unpinned = 0
    for name, want in sorted(pins.version.items()):
        got = have.get(name)
        try:
            matches = got is not None and SpecifierSet(f"=={want}").contains(got, prereleases=True)
        except InvalidVersion:
            matches = got == want
        if got is None:
            problems.append(f"{name}=={want} ({pins.source[name]}) is not installed")
            mismatched += 1
        elif not matches:
            problems.append(f"{name} {got} installed but {pins.source[name]} pins {want}")
            mismatched += 1
    for d in dists:
        if d.name not in pins.version and d.name not in BOOTSTRAP and d.name != PROJECT:
            unpinned += 1
            problems.append(f"{d.name} {d.version} is installed but pinned nowhere")
    if pins.declared_not_locked:
        problems.append("requirements.in declares packages missing from the requirements.txt lock: "
                        + ", ".join(pins.declared_not_locked))
    return problems, {"installed": len(dists), "pinned": len(pins.version),
                      "mismatched": mismatched, "unpinned_installs": unpinned}


def _base_model_components(include: bool) -> list[dict[str, Any]]:
    if not include:
        return []
    from strongroom.training.base_models import registered_names, resolve_base

    out = []
    for name in registered_names():
        try:
            spec = resolve_base(name)
        except StrongroomError:
            continue
        for fname, sha in sorted(spec.files.items()):
            out.append({"name": name, "file": fname, "sha256": sha, "format": spec.format})
    return out


def build_sbom(*, include_models: bool = True) -> dict[str, Any]:
    """The CycloneDX 1.6 BOM (as a JSON-ready dict) of this interpreter's environment."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    pins = read_pins()
    dists = installed()
    try:
        own_version = md.version(PROJECT)
    except md.PackageNotFoundError:
        own_version = "0+unknown"
    bom = Bom()
    bom.metadata.timestamp = datetime.now(UTC)
    bom.metadata.component = Component(
        name=PROJECT, version=own_version, type=ComponentType.APPLICATION,
        bom_ref=f"pkg:pypi/{PROJECT}@{own_version}",
        description="De-identify, encrypt, fine-tune and serve open LLMs on sensitive data",
    )
    bom.metadata.properties.add(Property(name="strongroom:python", value=sys.version.split()[0]))
    bom.metadata.properties.add(Property(name="strongroom:generator", value="strongroom compliance sbom"))
    for d in dists:
        if d.name == PROJECT:
            continue
        purl = PackageURL(type="pypi", name=d.name, version=d.version)
        licenses = []
        if d.license:
            try:
                licenses = [LicenseExpression(d.license)] if (" OR " in d.license or " AND " in d.license) \
                    else [DisjunctiveLicense(name=d.license)]
            except (ValueError, TypeError):
                licenses = []
        comp = Component(name=d.name, version=d.version, type=ComponentType.LIBRARY, purl=purl,
                         bom_ref=str(purl), licenses=licenses, description=d.summary[:200] or None)
        comp.properties.add(Property(name="strongroom:pinned-in", value=pins.source.get(d.name, "none")))
        bom.components.add(comp)
    for m in _base_model_components(include_models):
        comp = Component(name=m["name"], version=m["sha256"][:12], type=ComponentType.MACHINE_LEARNING_MODEL,
                         bom_ref=f"model:{m['name']}:{m['file']}", description=f"base model weights {m['file']}",
                         hashes=[HashType(alg=HashAlgorithm.SHA_256, content=m["sha256"])])
        comp.properties.add(Property(name="strongroom:format", value=m["format"]))
        bom.components.add(comp)
    with warnings.catch_warnings():
        # The dependency graph is not recorded (an environment has no single root to hang it on).
        warnings.simplefilter("ignore", UserWarning)
        return json.loads(JsonV1Dot6(bom).output_as_string())


def validate_sbom(doc: dict[str, Any]) -> None:
    """Raise StrongroomError unless ``doc`` validates against the CycloneDX 1.6 JSON schema
    (the schema ships inside cyclonedx-python-lib, so this works offline)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    if error is not None:
        raise StrongroomError(f"SBOM does not validate against CycloneDX {SPEC_VERSION}: {str(error)[:200]}")
