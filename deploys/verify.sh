# shellcheck shell=sh
# Prove that BuildKit builds on containerd after a change it depends on; go back to the last
# working setup if the daemon refuses the new one. Set before this (by deploys/verify.py):
# bin_dir, containerd_socket, namespace, limit (seconds), good_dir, watched (space-separated paths),
# stop_after (yes when buildkit.service was not running before this run: it is left as found).
# shellcheck disable=SC2154
set -u
buildkit_socket=/run/buildkit/buildkitd.sock

if [ ! -S "$containerd_socket" ]; then
  echo "containerd socket $containerd_socket does not exist: BuildKit was not checked (install or start containerd)"
  exit 0
fi

# Ask BuildKit (socket-activated) for its workers; true when the containerd worker answers in $namespace.
# reset-failed first: a daemon that failed before (start-limit-hit) must get a fresh start.
ask() {
  systemctl reset-failed buildkit.service buildkit.socket 2>/dev/null
  systemctl is-active --quiet buildkit.socket || systemctl start buildkit.socket || return 1
  answer=$(timeout "$limit" "$bin_dir/buildctl" --addr "unix://$buildkit_socket" debug workers -v 2>&1)
  status=$?
  [ "$status" -eq 0 ] || { [ "$status" -eq 124 ] && answer="no answer within $limit s"; return 1; }
  printf '%s\n' "$answer" | awk -v ns="$namespace" '
    { sub(/^[ \t]+/, ""); split($0, kv, /:[ \t]+/) }
    kv[1] == "org.mobyproject.buildkit.worker.executor" && kv[2] == "containerd" { executor = 1 }
    kv[1] == "org.mobyproject.buildkit.worker.containerd.namespace" && kv[2] == ns { space = 1 }
    END { exit !(executor && space) }'
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
  journalctl -u buildkit.service -n 12 --no-pager -o cat 2>/dev/null | sed 's/^/  /' >&2
}

if ask; then
  keep
  if [ "$stop_after" = yes ]; then
    # Socket-activated: the next client starts it again. buildkitd exits 1 on SIGTERM: not a failure.
    systemctl stop buildkit.service
    systemctl reset-failed buildkit.service 2>/dev/null
  fi
  echo "BuildKit answers: containerd worker in namespace $namespace"
  exit 0
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
  cp -pf "$copy" "$path.pyinfra-nerdctl.tmp" && mv -f "$path.pyinfra-nerdctl.tmp" "$path"
done
systemctl daemon-reload
systemctl stop buildkit.service 2>/dev/null
systemctl restart buildkit.socket
if ask; then
  back="BuildKit works again with the previous ones"
else
  back="BuildKit still does not answer with the previous ones: $answer"
fi
echo "buildkitd refused the new$refused ($first_answer); restored the previous working files: $back" >&2
exit 1
