#!/usr/bin/env bash
# Install the tools the e-mail tests run for real (tests/test_amp.py,
# tests/test_preview.py), nothing downloaded but registry packages:
#
# - the official AMP validator: the npm package amphtml-validator (its CLI and
#   JS API) and the validator it runs, validator_wasm.js, taken from the npm
#   package next@15.5.29, which ships a copy. With --validator_js the CLI works
#   offline; without it, it would fetch the validator from the AMP CDN.
#   Both go into .ci/node/ (ignored by git).
# - Debian's chromium, for headless screenshots of rendered e-mails.
#
# Idempotent: installs only what is missing. apt needs root (as in services.sh).
#
# Environment: CAMPAIGNCTL_TOOLS_DIR  where the npm tools go (default .ci/node)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${CAMPAIGNCTL_TOOLS_DIR:-.ci/node}"
AMP_VALIDATOR_VERSION="1.0.38"
NEXT_VERSION="15.5.29"  # carries dist/compiled/amphtml-validator/validator_wasm.js
# shellcheck source=.ci/lib.sh
source .ci/lib.sh  # apt_install (the cd above made the repository the working directory)

say() { echo "tools: $*"; }

amp_validator() {
  local cli="$TOOLS/node_modules/.bin/amphtml-validator"
  if [ ! -x "$cli" ]; then
    command -v npm >/dev/null || { say "npm missing: cannot install amphtml-validator" >&2; exit 1; }
    say "installing amphtml-validator@$AMP_VALIDATOR_VERSION into $TOOLS"
    mkdir -p "$TOOLS"
    npm install --prefix "$TOOLS" --no-save --no-audit --no-fund --loglevel=error "amphtml-validator@$AMP_VALIDATOR_VERSION"
  fi
  if [ ! -s "$TOOLS/validator_wasm.js" ]; then
    say "taking validator_wasm.js from next@$NEXT_VERSION"
    local scratch
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' RETURN
    (cd "$scratch" && npm pack --silent --loglevel=error "next@$NEXT_VERSION" >/dev/null)
    tar -xzf "$scratch"/next-*.tgz -C "$scratch" package/dist/compiled/amphtml-validator/validator_wasm.js
    mv "$scratch/package/dist/compiled/amphtml-validator/validator_wasm.js" "$TOOLS/validator_wasm.js"
  fi
  say "AMP validator: $cli with $TOOLS/validator_wasm.js"
}

chromium_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    say "no /usr/bin/chromium; installing Debian's chromium"
    apt_install chromium
  fi
  say "Chromium: $(/usr/bin/chromium --version 2>/dev/null || echo 'installed')"
}

amp_validator
chromium_browser
