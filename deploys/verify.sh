# shellcheck shell=sh
# Prove that BuildKit builds on containerd after a change it depends on; go back to the last
# working setup if the daemon refuses the new one. Set before this (by deploys/verify.py):
# bin_dir, buildkit_socket, containerd_socket (empty: none to wait for), namespace, limit (seconds),
# good_dir, watched (space-separated paths), stop_after (yes when the service was not running
# before this run: it is left as found), service_unit, socket_unit and temp_suffix (layout.py),
# and running_builds() and stop_if_idle() (deploys/idle.sh). For a user's
# BuildKit it runs as the user, on the user's units (deploys/verify.py USER_SYSTEMD).
# shellcheck disable=SC2154
set -u

if [ -n "$containerd_socket" ] && [ ! -S "$containerd_socket" ]; then
  echo "containerd socket $containerd_socket does not exist: BuildKit was not checked (install or start containerd)"
  exit 0
fi

# Ask BuildKit for its workers until $limit s have passed (buildkit_verify_timeout): 0 when the containerd
# worker answers in $namespace; 2 when the daemon refused (it failed to start or exited, or answered without
# that worker); 1 when it is still stopping (a graceful stop waits for builds) or starting (a big cache takes
# minutes) at the limit: neither is a refusal. $answer says what was seen.
ask() {
  deadline=$(($(date +%s) + limit))
  while :; do
    state=$(systemctl show -p ActiveState --value "$service_unit")
    # While systemd has a job for the unit (a restart: its stop, then its start) its state is not the outcome yet.
    if [ -z "$(systemctl list-jobs --no-legend "$service_unit" 2>/dev/null)" ]; then
      case $state in
        failed)
          result=$(systemctl show -p Result --value "$service_unit")
          answer="$service_unit failed ($result)"
          # Killed by systemd's TimeoutStartSec (buildkit_verify_timeout): slow, which is no refusal.
          [ "$result" = timeout ] && { answer="$service_unit did not start within $limit s" \
            "(buildkit_verify_timeout), so systemd stopped it"; return 1; }
          return 2 ;;
        active|inactive)
          # Inactive: the socket starts it (socket-activated), as it would for any client.
          systemctl is-active --quiet "$socket_unit" || systemctl start "$socket_unit" || {
            answer="$socket_unit does not start"; return 2; }
          left=$((deadline - $(date +%s)))
          if answer=$(timeout "$((left > 1 ? left : 1))" "$bin_dir/buildctl" --addr "unix://$buildkit_socket" \
            debug workers -v 2>&1); then
            has_worker && return 0
            return 2
          fi ;;
      esac
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      answer="no answer within $limit s (buildkit_verify_timeout), $service_unit $state: ${answer:-}"
      return 1
    fi
    sleep 1
  done
}

has_worker() {
  printf '%s\n' "$answer" | awk -v ns="$namespace" '
    { sub(/^[ \t]+/, ""); split($0, kv, /:[ \t]+/) }
    kv[1] == "org.mobyproject.buildkit.worker.executor" && kv[2] == "containerd" { executor = 1 }
    kv[1] == "org.mobyproject.buildkit.worker.containerd.namespace" && kv[2] == ns { space = 1 }
    END { exit !(executor && space) }'
}

# A daemon that failed before this run (start-limit-hit, or exit 1 on an earlier stop) gets a fresh start.
fresh_start() {
  systemctl reset-failed "$service_unit" "$socket_unit" 2>/dev/null
}

# Keep copies of what works. Copies, not hard links: a link would change the files' ctime, which
# BuildHostState reads to tell a unit that runs older files. Same size and mtime: already kept.
keep() {
  mkdir -p "$good_dir"
  for path in $watched; do
    copy="$good_dir/$(printf '%s' "$path" | tr / _)"
    if [ ! -e "$path" ]; then
      rm -f "$copy"
    elif [ "$(stat -c %s.%Y "$path")" != "$(stat -c %s.%Y "$copy" 2>/dev/null)" ]; then
      # A copy cut short (a full disk) is no copy: no partial file stays, and the operator is told.
      if ! { cp -p "$path" "$copy.tmp" 2>/dev/null && mv -f "$copy.tmp" "$copy"; }; then
        rm -f "$copy.tmp"
        echo "warning: could not keep a copy of $path in $good_dir (full?): a later change BuildKit refuses cannot go back to it"
      fi
    fi
  done
}

journal() {
  echo "buildkitd's last log lines:" >&2
  journalctl -u "$service_unit" -n 12 --no-pager -o cat 2>/dev/null | sed 's/^/  /' >&2
}

fresh_start
ask
outcome=$?
if [ "$outcome" -eq 0 ]; then
  keep
  # Socket-activated: the next client starts it again; one that came during the check keeps its build.
  if [ "$stop_after" = yes ]; then
    stop_if_idle "$bin_dir/buildctl" "unix://$buildkit_socket" "$service_unit"
  fi
  echo "BuildKit answers: containerd worker in namespace $namespace"
  exit 0
fi
if [ "$outcome" -eq 1 ]; then
  echo "BuildKit did not answer in time, but did not refuse the new files either: $answer; they stay," \
    "nothing was restored (see systemctl status $service_unit)" >&2
  journal
  exit 1
fi
first_answer=$answer

# What differs from the last setup that worked is what the daemon refused.
refused=""
if [ -d "$good_dir" ]; then
  for path in $watched; do
    copy="$good_dir/$(printf '%s' "$path" | tr / _)"
    if [ -e "$copy" ] && ! cmp -s "$copy" "$path"; then
      refused="$refused $path"
    fi
  done
fi
if [ -z "$refused" ]; then
  echo "BuildKit did not answer with the containerd worker in namespace $namespace: $first_answer" >&2
  journal
  exit 1
fi
journal
for path in $refused; do
  copy="$good_dir/$(printf '%s' "$path" | tr / _)"
  cp -pf "$copy" "$path$temp_suffix" && mv -f "$path$temp_suffix" "$path"
done
systemctl daemon-reload
systemctl stop "$service_unit" 2>/dev/null
fresh_start
systemctl restart "$socket_unit"
if ask; then
  back="BuildKit works again with the previous ones"
else
  back="BuildKit still does not answer with the previous ones: $answer"
fi
echo "buildkitd refused the new$refused ($first_answer); restored the previous working files: $back" >&2
exit 1
