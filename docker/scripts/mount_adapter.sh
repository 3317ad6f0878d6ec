#!/bin/sh
# The old entry point, kept as a thin wrapper so that scripts calling it keep working:
#   /opt/codi/scripts/mount_adapter.sh <dir> [options]
# runs `codi-adapter mount <dir> [options]` with the same arguments, output and exit status.
# CODI_ADAPTER_BIN overrides the CLI's path.
cli="${CODI_ADAPTER_BIN:-codi-adapter}"
if ! command -v "$cli" >/dev/null 2>&1; then
  echo "mount_adapter.sh: cannot run $cli: not found" >&2
  echo "  hint: rebuild the image (make build-complete), or set CODI_ADAPTER_BIN" >&2
  exit 3
fi
exec "$cli" mount "$@"
