"""bandit over the server and the infrastructure: no finding of medium severity or higher, and every
`nosec` says why next to it."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from .processes import REPO

PACKAGES = ("server", "infra")
# `# nosec B123 # why`, or `# nosec B123: why`: a suppression names its check and gives a reason.
JUSTIFIED_NOSEC = re.compile(r"#\s*nosec\s+B\d{3}(,\s*B\d{3})*\s*[#:]\s*\S.{8,}")


def test_bandit_finds_nothing_of_medium_severity_or_higher():
    scan = subprocess.run([sys.executable, "-m", "bandit", "-r", *PACKAGES, "--severity-level", "medium",
                           "--format", "json", "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=300)
    report = json.loads(scan.stdout)
    assert report["errors"] == [], report["errors"]
    scanned = {name for name in report["metrics"] if name != "_totals"}
    assert any(name.startswith("server/") for name in scanned) and any(name.startswith("infra/") for name in scanned)
    findings = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]]
    assert findings == [], "\n".join(findings)


def test_every_nosec_names_its_check_and_says_why():
    unjustified = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                   for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))
                   for number, line in enumerate(path.read_text().splitlines(), 1)
                   if "nosec" in line and not JUSTIFIED_NOSEC.search(line)]
    assert unjustified == [], "\n".join(unjustified)
