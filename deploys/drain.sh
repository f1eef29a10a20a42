# shellcheck shell=sh
# wait_for_builds: wait until a BuildKit daemon runs no build, before a deploy restarts or stops it.
# Set before this (deploys/drain.py): buildctl, address, unit (empty: no unit to ask systemd about),
# systemctl (the unit's scope, e.g. "systemctl --user -M alice@"), drain_timeout (seconds), and
# running_builds() (facts/builds.py). Fails with one line when builds still run at the timeout:
# then nothing was stopped, and the daemon keeps running what it runs.
# shellcheck disable=SC2154
wait_for_builds() {
  # An inactive unit runs no build; asking its socket would only start the socket-activated daemon.
  if [ -n "$unit" ] && ! $systemctl is-active --quiet "$unit"; then
    return 0
  fi
  what=${unit:-BuildKit at $address}
  deadline=$(($(date +%s) + drain_timeout))
  said=no
  while :; do
    if builds=$(running_builds "$buildctl" "$address" 2>&1); then
      problem=""
      [ -z "$builds" ] && return 0
    else
      problem=$(printf '%s\n' "$builds" | head -n 1)
      case $problem in *Unimplemented*|*"unknown method"*|*"unknown service"*)
        echo "$what cannot list its builds (BuildKit before 0.11): not waited for"
        return 0 ;;
      esac
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      if [ -n "$problem" ]; then
        echo "$what did not say which builds it runs within $drain_timeout s (buildkit_drain_timeout): $problem;" \
          "nothing was restarted or stopped: BuildKit keeps its previous setup until a later run restarts it" >&2
      else
        echo "$(printf '%s\n' "$builds" | wc -l) build(s) still running on $what (the oldest since" \
          "$(printf '%s\n' "$builds" | awk '{ print $2 }' | sort | head -n 1)) after $drain_timeout s" \
          "(buildkit_drain_timeout): nothing was restarted or stopped: BuildKit keeps its previous setup" \
          "until a later run, once the builds are over, restarts it" >&2
      fi
      return 1
    fi
    if [ "$said" = no ] && [ -z "$problem" ]; then
      echo "waiting up to $drain_timeout s for $(printf '%s\n' "$builds" | wc -l) build(s) in flight on $what"
      said=yes
    fi
    sleep 2
  done
}
