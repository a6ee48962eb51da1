# Shared by the .ci scripts (sourced, not run). The sourcing script defines
# say() for its own prefix before calling these.

APT_UPDATED=""

# apt_install PACKAGE...: Debian/Ubuntu packages, as root; apt-get update once per run.
apt_install() {
  if ! command -v apt-get >/dev/null; then
    say "cannot install $* here (no apt-get); install it by hand" >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    say "installing $* needs root" >&2
    exit 1
  fi
  if [ -z "$APT_UPDATED" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
