"""A run without deliverability checks must not pay for dnspython, dkimpy, pyspf, authres or the PSL."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("dns", "dkim", "spf", "authres", "publicsuffixlist", "cryptography")


def test_importing_the_package_and_the_cli_loads_no_protocol_library() -> None:
    modules = ", ".join(
        f"mail_monitor.deliverability.{name}"
        for name in ("dns", "model", "spf", "dkim", "dmarc", "received", "authresults", "probe", "posture",
                     "mta_sts", "blocklists")
    )
    code = (
        f"import sys, mail_monitor.cli, {modules}\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
