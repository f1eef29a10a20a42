# shellcheck shell=sh
# stop_if_idle BUILDCTL ADDRESS UNIT: stop UNIT, a socket-activated daemon that this run started only to ask
# it something (the check after a change, a prune), unless a build came meanwhile: its client keeps it
# running. Fails when it was not stopped. Set before this: running_builds() (facts/builds.py).
stop_if_idle() {
  if ! builds=$(running_builds "$1" "$2") || [ -n "$builds" ]; then
    return 1
  fi
  # buildkitd exits 1 on SIGTERM: not a failure.
  systemctl stop "$3"
  systemctl reset-failed "$3" 2>/dev/null
  return 0
}
