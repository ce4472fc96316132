# Sourced by run.sh and ab.sh (after `cd` to the repo root, with $root set).
#
# A work directory and the processes started, all stopped and removed on exit.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The OTLP receiver the traced runs export to: rotel, a collector written in Rust, from PyPI
# (the wheel ships its binary), installed when missing. Uses the repo's .venv when there is
# one, else a venv in $work. Sets $venv and $rotel_bin.
find_rotel() {
  venv=$root/.venv
  [ -x "$venv/bin/python" ] || { venv=$work/venv; python3 -m venv "$venv"; }
  rotel_bin=$(rotel_agent) || true
  if [ ! -x "$rotel_bin" ]; then
    "$venv/bin/pip" install -q 'rotel==0.0.1a15'
    rotel_bin=$(rotel_agent)
  fi
}
rotel_agent() {
  "$venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null
}
