# Sourced by run.sh and ab.sh: finds (installing when missing) the OTLP receiver the traced
# runs export to: rotel, a collector written in Rust, from PyPI (the wheel ships its binary).
# Uses the repo's .venv when there is one, else a venv in $work. Needs $root and $work; sets
# $venv and $rotel_bin.
venv=$root/.venv
[ -x "$venv/bin/python" ] || { venv=$work/venv; python3 -m venv "$venv"; }
rotel_agent() {
  "$venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))' 2>/dev/null
}
rotel_bin=$(rotel_agent) || true
if [ ! -x "$rotel_bin" ]; then
  "$venv/bin/pip" install -q 'rotel==0.0.1a15'
  rotel_bin=$(rotel_agent)
fi
