#!/usr/bin/env python3
"""The old entry point, kept as a thin wrapper so that scripts calling it keep working:

    python docker/scripts/verify_adapter.py <dir> [options]

runs `codi-adapter verify <dir> [options]` with the same arguments, output and exit status
(0 valid, 1 invalid, 2 usage, 3 environment). CODI_ADAPTER_BIN overrides the CLI's path.
"""
import os
import sys

cli = os.environ.get("CODI_ADAPTER_BIN") or "codi-adapter"
try:
    os.execvp(cli, [cli, "verify", *sys.argv[1:]])
except OSError as e:
    print(f"verify_adapter.py: cannot run {cli}: {e.strerror}", file=sys.stderr)
    print("  hint: rebuild the image (make build-complete), or set CODI_ADAPTER_BIN", file=sys.stderr)
    sys.exit(3)
