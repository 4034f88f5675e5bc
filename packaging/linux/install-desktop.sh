#!/bin/sh
# Put Shelf in the current user's desktop menu (XDG paths): the program, its icons and
# its launcher. Uses dist/shelf when it was built (make dist), else .venv/bin/shelf.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
bin=$HOME/.local/bin
if [ -x "$top/dist/shelf" ]; then program="$top/dist/shelf"
elif [ -x "$top/.venv/bin/shelf" ]; then program="$top/.venv/bin/shelf"
else echo "build Shelf first: make dist (or make run)" >&2; exit 1; fi
mkdir -p "$bin" "$data/applications"
ln -sf "$program" "$bin/shelf"
for size in 48 128 256; do
  mkdir -p "$data/icons/hicolor/${size}x${size}/apps"
  cp "$here/icons/shelf-$size.png" "$data/icons/hicolor/${size}x${size}/apps/shelf.png"
done
mkdir -p "$data/icons/hicolor/scalable/apps"
cp "$here/icons/shelf.svg" "$data/icons/hicolor/scalable/apps/shelf.svg"
sed "s|^Exec=shelf|Exec=$bin/shelf|; s|^TryExec=shelf|TryExec=$bin/shelf|" \
  "$here/shelf.desktop" > "$data/applications/shelf.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database "$data/applications" || true
echo "Shelf is in your applications menu ($data/applications/shelf.desktop)"
