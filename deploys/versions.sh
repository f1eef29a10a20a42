# shellcheck shell=sh
# remember PATH: record the --version line of the installed binary PATH in $versions, keyed by
# $version_key (facts/versions.py), so that the version facts need not execute it while the key
# still matches. Run under the host's lock; the script sets $versions and $version_key.
# shellcheck disable=SC2154
remember() {
  [ -f "$1" ] && [ -x "$1" ] || return 0
  key=$(stat -L -c "$version_key" "$1") || return 0
  line=$("$1" --version 2>/dev/null | head -n 1) || true
  [ -n "$line" ] || return 0
  { awk -F'|' -v path="$1" '$1 != path' "$versions" 2>/dev/null || true; printf '%s|%s|%s\n' "$1" "$key" "$line"; } > "$versions.new"
  chmod 600 "$versions.new" && mv -f "$versions.new" "$versions"
}
