#!/usr/bin/env bash
# Run rmt-tui in a real terminal (tmux), type keys, and print what is on the screen after each step.
#   scripts/tmux_look.sh [-s COLSxROWS] [-w SECONDS] -- [rmt-tui args] ::: KEYS... 
# Each KEYS word is passed to `tmux send-keys` (e.g. j, Enter, Escape, "/" ...); the pane is printed
# after each one. Example: scripts/tmux_look.sh -s 80x24 -- demo_models/mlp_bs16.safetensors ::: a v v q
set -euo pipefail
size=120x40; wait=1.5
while [[ $# -gt 0 && $1 != -- ]]; do
  case $1 in -s) size=$2; shift 2;; -w) wait=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac
done
shift  # --
args=(); while [[ $# -gt 0 && $1 != ::: ]]; do args+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
cols=${size%x*}; rows=${size#*x}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${RMT_TUI_BIN:-$here/.venv/bin/rmt-tui}
session=rmt-look-$$
tmux new-session -d -s "$session" -x "$cols" -y "$rows" "$bin ${args[*]:-}; echo '[exited' \$?']'; sleep 30"
trap 'tmux kill-session -t "$session" 2>/dev/null || true' EXIT
sleep "$wait"; sleep 2
echo "=== start ($size)"; tmux capture-pane -p -t "$session"
for k in "$@"; do
  tmux send-keys -t "$session" "$k"
  sleep "$wait"
  echo "=== after key: $k"; tmux capture-pane -p -t "$session"
done
