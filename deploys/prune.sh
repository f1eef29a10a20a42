# shellcheck shell=sh
# Prune BuildKit's cache through its daemon, and leave a socket-activated daemon as it was found. Set
# before this (deploys/prune.py): buildctl, address, service_unit, socket_unit, counted (yes: the
# options end in --format '{{.Size}}', one line a freed record), the options as "$@" (set --), and
# stop_if_idle() (deploys/idle.sh).
# shellcheck disable=SC2154
set -u
if systemctl is-active --quiet "$service_unit"; then
  was_running=yes
elif systemctl is-active --quiet "$socket_unit"; then
  was_running=no
else
  echo "neither $service_unit nor $socket_unit is active: nothing answers at $address, nothing was pruned" \
    "(systemctl start $socket_unit, or install_buildkit)" >&2
  exit 1
fi
if output=$("$buildctl" --addr "$address" prune "$@" 2>&1); then status=0; else status=$?; fi
left="$service_unit was running and still is"
if [ "$was_running" = no ]; then
  # Started only to prune: stopped again, unless a build came meanwhile (its client keeps it running).
  if stop_if_idle "$buildctl" "$address" "$service_unit"; then
    left="$service_unit stopped again, as it was found"
  else
    left="$service_unit left running: a build started on it meanwhile"
  fi
fi
if [ "$status" -ne 0 ]; then
  echo "buildctl prune failed: $(printf '%s\n' "$output" | grep -v '^$' | tail -n 1); $left" >&2
  exit 1
fi
if [ "$counted" = yes ]; then
  freed=$(printf '%s\n' "$output" | awk '/^[0-9]+$/ { n++; bytes += $1 }
    END { printf "%.0f bytes (%.1f MB) in %d cache records", bytes, bytes / 1e6, n }')
else
  # Before BuildKit 0.11 buildctl has no --format: its own table ends with the total ("Total:<tabs>5.17MB").
  freed=$(printf '%s\n' "$output" | awk '$1 == "Total:" { total = $2 } END { print total }')
fi
echo "freed $freed; $left"
