# shellcheck shell=sh
# Functions of the install script (deploys/operations.py install_script); each failure names
# what and why. The script sets $dest, $work, $unpacked and $folders, and includes drop.sh.
# shellcheck disable=SC2154
make_dirs() {
  [ -d "$1" ] && return 0
  make_dirs "$(dirname "$1")" || return 1
  mkdir "$1" 2>/dev/null || return 1
  remember_folder "$1" && chown root:root "$1" && chmod 755 "$1"
}
fetch() {
  case "$1" in /*)
    mv -f "$1" "$2" || { echo "cannot take the uploaded $1" >&2; exit 1; }
  ;; *)
  if command -v curl >/dev/null 2>&1; then
    curl --fail --silent --show-error --location --retry 2 --output "$2" "$1" || { echo "download of $1 failed" >&2; exit 1; }
  elif command -v wget >/dev/null 2>&1; then
    wget --quiet --tries=3 --output-document="$2" "$1" || { echo "download of $1 failed" >&2; exit 1; }
  else
    echo "neither curl nor wget is installed: cannot download $1" >&2; exit 1
  fi
  ;; esac
  got=$(sha256sum "$2" | cut -d' ' -f1)
  if [ "$got" != "$3" ]; then
    echo "SHA-256 mismatch for $1: expected $3, got $got; nothing was installed" >&2; exit 1
  fi
}
megabytes() {
  awk -v kib="$1" 'BEGIN { printf "%.1f MB", kib / 1024 }'
}
# Before tar fills the disk line by line: the archive's files (whole 4 KiB blocks) against what df says is free.
check_room() {
  need=$(tar -tvzf "$work/$2.tar.gz" | awk '{ kib += int(($3 + 4095) / 4096) * 4 + 4 } END { print kib + 0 }')
  free=$(df -Pk "$unpacked" | awk 'NR == 2 { print $4 }')
  if [ "$need" -gt "$free" ]; then
    echo "not enough room in $dest to unpack $1: it needs $(megabytes "$need"), $(megabytes "$free") free; nothing was installed" >&2
    exit 1
  fi
}
unpack() {
  check_room "$1" "$2"
  mkdir "$unpacked/$2"
  tar -xzf "$work/$2.tar.gz" -C "$unpacked/$2" || { echo "cannot unpack $1: nothing was installed" >&2; exit 1; }
  for name in $4; do
    [ -f "$unpacked/$2/$3/$name" ] || { echo "$1 has no $name: nothing was installed" >&2; exit 1; }
  done
  (cd "$unpacked/$2/$3" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort) > "$work/$2.files"
  sed "s|^|$dest/|" "$work/$2.files" > "$work/$2.paths"
  cat "$work/$2.paths" >> "$work/all.paths"
  chown -R root:root "$unpacked/$2/$3" && chmod -R u=rwX,go=rX "$unpacked/$2/$3"
}
put() {
  make_dirs "$(dirname "$dest/$3")" || { echo "cannot create the folder of $dest/$3" >&2; exit 1; }
  mv -f "$unpacked/$1/$2/$3" "$dest/$3"
}
is_one_of() {
  for word in $2; do [ "$word" = "$1" ] && return 0; done
  return 1
}
place() {
  while IFS= read -r name; do
    is_one_of "$name" "$3" || put "$1" "$2" "$name"
  done < "$work/$1.files"
}
place_last() {
  for name in $3; do put "$1" "$2" "$name"; done
}
write_list() {
  chmod 644 "$1.new" && mv -f "$1.new" "$1"
}
intend() {
  cat "$work/$1.paths" "$2" 2>/dev/null | sort -u > "$2.new" && write_list "$2"
}
record() {
  grep -vxF -f "$work/$1.paths" "$2" > "$work/gone" || true
  drop_listed "$work/gone"
  cp "$work/$1.paths" "$2.new" && write_list "$2"
}
remember_listed() {
  while IFS= read -r name; do
    if is_one_of "${name##*/}" "$2"; then remember "$dest/$name"; fi
  done < "$work/$1.files"
}
retire() {
  if [ -f "$1" ]; then
    grep -vxF -f "$work/all.paths" "$1" > "$work/gone" || true
    drop_listed "$work/gone"
    rm -f "$1"
  fi
}
