#!/usr/bin/env bash
# Install the Debian packages named as arguments when they are missing (needs root and apt-get).
# Without root, say what is missing and go on: tests that need it skip locally and fail in CI.
set -u
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${missing[@]}" >/tmp/ablate-apt.log 2>&1 || {
    apt-get update -qq >>/tmp/ablate-apt.log 2>&1
    apt-get install -y -qq "${missing[@]}" >>/tmp/ablate-apt.log 2>&1 || {
      echo "apt-get install ${missing[*]} failed; see /tmp/ablate-apt.log" >&2; exit 1; }
  }
else
  echo "Missing Debian packages (install them as root): ${missing[*]}" >&2
fi
