"""Demo step: data-subject rights (consent, access/export, erasure) and retention.

Runs the real commands against the demo home: claims imported with a subject field, a
retention period and a consent rule; a de-identified copy that carries the subject as an
opaque ref; consent granted; an encrypted access package exported and opened; then the
subject erased by crypto-shredding (one key destroyed, no shard rewritten) with the erasure
certificate, and every model trained on their data flagged ``needs-retrain``.

Standalone: ``.venv/bin/python examples/demo_subjects.py`` makes a scratch home first.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import secrets

from demo import DATA, console, sr, step  # noqa: F401  (examples/ is on sys.path when demo.py runs)


def _subject() -> str:
    """A claims subject who also appears in the support chats, if there is one."""
    support = {json.loads(line)["subject_id"]
               for line in (DATA / "support.jsonl").read_text(encoding="utf-8").splitlines()}
    with open(DATA / "claims.csv", newline="", encoding="utf-8") as fh:
        ids = [row["subject_id"] for row in csv.DictReader(fh)]
    return next((i for i in ids if i in support), ids[0])


def run(env: dict[str, str], home: pathlib.Path, otp) -> None:  # noqa: ANN001 - demo.Otp
    """Import with a subject field, consent, export, erase; show what erasure proved."""
    step("Data subjects: consent, access package and erasure by crypto-shredding (GDPR 15/17, CCPA)")
    subject = _subject()
    env = dict(env, SUBJECT_EXPORT_PASSPHRASE=secrets.token_urlsafe(18))
    console.print(sr(["data", "import", str(DATA / "claims.csv"), "--name", "claims-subjects",
                      "--subject-field", "subject_id", "--retention", "2555d",
                      "--consent-required", "model-training", "--purpose", "claims handling"],
                     env).stdout.strip())
    shown = json.loads(sr(["data", "show", "claims-subjects", "--json"], env).stdout)
    console.print(f"  {shown['subjects']} subjects, each with their own data key; retention "
                  f"{shown['retention']} (expires {shown['expires_at'][:10]}); consent required for "
                  f"{', '.join(shown['consent_required'])}")
    sr(["data", "deid", "claims-subjects", "--out", "claims-subjects-deid"], env)
    console.print("  de-identified copy claims-subjects-deid: subject id replaced by an opaque "
                  "ref, records sealed under the same subject keys")
    sr(["subjects", "consent", subject, "--purpose", "model-training", "--grant"], env)
    console.print(sr(["subjects", "show", subject], env).stdout.rstrip())

    package = home.parent / "subject-access.srsx"
    opened = home.parent / "subject-access.json"
    console.print(sr(["subjects", "export", subject, "-o", str(package),
                      "--passphrase-env", "SUBJECT_EXPORT_PASSPHRASE"], env).stdout.strip())
    sr(["subjects", "open-export", str(package), "-o", str(opened),
        "--passphrase-env", "SUBJECT_EXPORT_PASSPHRASE"], env)
    doc = json.loads(opened.read_text(encoding="utf-8"))
    console.print(f"  the subject opens it with the passphrase: "
                  f"{sum(len(d['records']) for d in doc['datasets'])} records from "
                  f"{', '.join(d['dataset'] for d in doc['datasets'])}; consent history included")
    opened.unlink()
    package.unlink()

    cert = json.loads(sr(["subjects", "erase", subject, "--reason", "GDPR Art. 17 request (demo)",
                          "--otp", otp.code(), "--json"], env).stdout)
    console.print(f"  erasure {cert['erasure_id']}: {cert['records']} records in "
                  f"{len(cert['dataset_versions'])} dataset versions; keys destroyed "
                  f"{cert['keys_destroyed']}, bytes rewritten {cert['bytes_rewritten']}, "
                  f"models flagged {len(cert['models_flagged'])}; verified={cert['verified']}; "
                  f"certificate at audit #{cert['audit_seq']} (subject and reason HMAC'd)")
    after = json.loads(sr(["data", "show", "claims-subjects", "--json"], env).stdout)
    console.print(f"  claims-subjects now: {after['erased_records']} record(s) of "
                  f"{after['erased_subjects']} erased subject(s) unreadable; the rest read as before")
    models = json.loads(sr(["models", "list", "--json"], env).stdout or "[]")
    for m in models:
        if m.get("flags"):
            console.print(f"  model {m['name']} v{m['version']}: {', '.join(m['flags'])}")


if __name__ == "__main__":
    import tempfile

    from demo import Otp

    with tempfile.TemporaryDirectory() as tmp:
        home = pathlib.Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
        env.update(STRONGROOM_HOME=str(home), STRONGROOM_PASSPHRASE=secrets.token_urlsafe(24),
                   HF_HUB_OFFLINE="1")
        init = json.loads(sr(["init", "--json"], env).stdout)
        env["STRONGROOM_API_KEY"] = init["api_key"]
        run(env, home, Otp(init["totp_secret"]))
