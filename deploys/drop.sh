# shellcheck shell=sh
# Functions that remove files, and the folders this package made, and only those.
# Lists are read a line at a time, so a file name with a space or a * stays one name.
# The script that includes them (deploys/operations.py) sets $folders: the list of made folders.
# shellcheck disable=SC2154
remember_folder() {
  printf '%s\n' "$1" >> "$folders" && chmod 644 "$folders"
}
forget_folder() {
  { grep -vxF "$1" "$folders" || true; } > "$folders.new" && chmod 644 "$folders.new" && mv -f "$folders.new" "$folders"
}
drop() {
  rm -f "$1"
  dir=$(dirname "$1")
  while grep -qxF "$dir" "$folders" 2>/dev/null && rmdir "$dir" 2>/dev/null; do
    forget_folder "$dir"
    dir=$(dirname "$dir")
  done
}
drop_listed() {
  while IFS= read -r path; do drop "$path"; done < "$1"
}
