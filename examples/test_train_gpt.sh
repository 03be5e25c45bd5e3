#!/usr/bin/env bash
# train_gpt end to end on 2 processes with a tiny model (CTest examples.train_gpt):
#   - the validation loss falls from step 0 to the last step;
#   - metrics.csv, the TensorBoard events, loss.png (a PNG) and the checkpoints exist;
#   - a run resumed from the step-4 checkpoint (`--resume` with no value: the newest in
#     --checkpoint-dir) logs, bit for bit, the training losses of steps 5..8 that the
#     uninterrupted run logged.
#
#   test_train_gpt.sh path/to/train_gpt
set -euo pipefail
bin="$1"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tiny=(--devices 2 --layers 1 --d-model 32 --heads 2 --seq 32 --batch 4 --grad-accum 2 --steps 8
      --eval-every 4 --eval-batches 2 --warmup 2 --lr 1e-2 --sample-tokens 16 --seed 7)
fail() { echo "test_train_gpt: $*" >&2; exit 1; }
# Column `name` of metrics.csv at step `step` (empty when that row has no value for it).
cell() {
  awk -F, -v name="$2" -v step="$3" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
                                      $1 == step && $col[name] != "" { print $col[name] }' "$1"
}

timeout 120 "$bin" "${tiny[@]}" --log-dir "$work/a" --checkpoint-dir "$work/a/ckpt" > "$work/a.out" 2>&1 ||
  { cat "$work/a.out"; fail "the uninterrupted run failed"; }
csv="$work/a/logs/version_0/metrics.csv"
[ -s "$csv" ] || fail "no metrics.csv at $csv"
ls "$work"/a/logs/version_0/events.out.tfevents.* > /dev/null || fail "no TensorBoard event file"
png="$work/a/logs/version_0/loss.png"
[ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$png is not a PNG"
for step in 4 8; do
  [ -s "$work/a/ckpt/step_00000$step.safetensors" ] || fail "no checkpoint of step $step"
done
first=$(cell "$csv" val_loss 0) last=$(cell "$csv" val_loss 8)
awk -v f="$first" -v l="$last" 'BEGIN { exit !(f != "" && l != "" && l < f - 0.3) }' ||
  fail "the validation loss did not fall: $first at step 0, $last at step 8"
head -1 "$work/a.out" | grep -q '^cpu: ' || fail "the first line is not the CPU capability: $(head -1 "$work/a.out")"
grep -q '^sample (temperature' "$work/a.out" || fail "no text sample in the output"

mkdir -p "$work/b/ckpt"
cp "$work/a/ckpt/step_000004.safetensors" "$work/b/ckpt/"
timeout 120 "$bin" "${tiny[@]}" --log-dir "$work/b" --checkpoint-dir "$work/b/ckpt" --resume > "$work/b.out" 2>&1 ||
  { cat "$work/b.out"; fail "the resumed run failed"; }
grep -q 'resumed from .*step_000004.safetensors at step 4' "$work/b.out" || { cat "$work/b.out"; fail "did not resume at step 4"; }
resumed="$work/b/logs/version_0/metrics.csv"
[ -z "$(cell "$resumed" train_loss 4)" ] || fail "the resumed run trained step 4 again"
for step in 5 6 7 8; do
  a=$(cell "$csv" train_loss $step) b=$(cell "$resumed" train_loss $step)
  [ -n "$a" ] && [ "$a" = "$b" ] || fail "step $step: uninterrupted loss '$a', resumed loss '$b'"
done
echo "train_gpt: validation loss $first -> $last; resumed steps 5..8 equal the uninterrupted run"
