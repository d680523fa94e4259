#!/usr/bin/env bash
# A checkpoint that is damaged or does not agree with itself is refused with
# exit 2 and one line naming the folder, the file and the mismatch; it never
# resumes silently wrong, and a damaged newest one never falls back silently
# to an older one (--resume-from picks one explicitly, and resumes exactly).
source "$(dirname "$0")/common.sh" "$@"
"$MYELIN" data synthetic --out data --examples 2000 --seed 2 >/dev/null
C=(--train-data 'data/addition_train_*.bin' --layers 1 --channels 16 --heads 2 --max-seq-len 16
  --seq-len 16 --batch-size 2 --lr 1e-3 --seed 3 --quiet --threads 1)
"$MYELIN" train "${C[@]}" --steps 4 --checkpoint-dir ck --checkpoint-every 2 \
  --metrics-out full.jsonl --save model.bin
[ -f ck/step_00000002/manifest.txt ] && [ -f ck/step_00000004/manifest.txt ] ||
  fail "expected checkpoints at steps 2 and 4"
grep -q '^file.model.bin=[0-9a-f]\{16\} [0-9]*$' ck/step_00000004/manifest.txt ||
  fail "manifest lacks the model's checksum: $(cat ck/step_00000004/manifest.txt)"
# case NAME: a fresh copy of the pristine checkpoints in folder NAME.
case_dir() {
  rm -rf "$1"
  cp -r ck "$1"
}
R=(train "${C[@]}" --steps 6 --resume --checkpoint-dir) # R DIR: resume from DIR
poke() { # poke FILE OFFSET BYTES: overwrite bytes in place (BYTES as printf escapes)
  printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
flip_bit() { # flip_bit FILE OFFSET: flip the lowest bit of one byte
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  poke "$1" "$2" "$(printf '\\%03o' $((b ^ 1)))"
}

case_dir flip # one flipped bit in the newest model
flip_bit flip/step_00000004/model.bin 3001
expect2 "flip/step_00000004/model.bin: checksum mismatch" "${R[@]}" flip
grep -qF -- "--resume-from" err.txt || fail "no hint at --resume-from: $(cat err.txt)"
# ... and --resume-from picks the older one, which resumes exactly.
"$MYELIN" train "${C[@]}" --steps 4 --resume-from flip/step_00000002 --metrics-out from2.jsonl
[ "$(losses from2.jsonl)" = "$(losses full.jsonl | tail -n 2)" ] ||
  fail "--resume-from step 2 differs from the uninterrupted run"
expect2 "--resume-from: 'nothere' is not a checkpoint folder" "${R[@]}" flip --resume-from nothere
expect2 "step_00000004/model.bin: checksum mismatch" "${R[@]}" flip --resume-from flip/step_00000004

case_dir zero # an all-zero model of the right size
size=$(stat -c %s zero/step_00000004/model.bin)
truncate -s 0 zero/step_00000004/model.bin
truncate -s "$size" zero/step_00000004/model.bin
expect2 "zero/step_00000004/model.bin: checksum mismatch" "${R[@]}" zero

case_dir trunc # a truncated training state
truncate -s 200 trunc/step_00000004/state_0.bin
expect2 "trunc/step_00000004/state_0.bin: 200 bytes but the manifest says" "${R[@]}" trunc

case_dir mstep # the manifest's step disagrees with the folder
sed -i 's/^step=4$/step=2/' mstep/step_00000004/manifest.txt
expect2 "mstep/step_00000004/manifest.txt: step=2 but the folder is step_00000004" "${R[@]}" mstep

case_dir mranks # the manifest's ranks disagree with its dp x pp
sed -i 's/^ranks=1$/ranks=2/' mranks/step_00000004/manifest.txt
expect2 "mranks/step_00000004/manifest.txt: dp x pp = 1x1 but ranks=2" "${R[@]}" mranks

case_dir mdp # a consistent two-rank manifest over one rank's files
sed -i 's/^ranks=1$/ranks=2/; s/^dp=1$/dp=2/' mdp/step_00000004/manifest.txt
expect2 "no checksum line for state_1.bin" "${R[@]}" mdp

case_dir rename # the folder name disagrees with the manifest and the state
mv rename/step_00000004 rename/step_00000006
expect2 "rename/step_00000006/manifest.txt: step=4 but the folder is step_00000006" "${R[@]}" rename

case_dir extra # a file the manifest does not list
cp extra/step_00000004/state_0.bin extra/step_00000004/state_1.bin
expect2 "extra/step_00000004/state_1.bin: unexpected file" "${R[@]}" extra

case_dir huge # a step number beyond any run (and beyond 64 bits)
mkdir huge/step_99999999999999999999
cp huge/step_00000004/manifest.txt huge/step_99999999999999999999/
expect2 "huge/step_99999999999999999999: step number out of range" "${R[@]}" huge
# Pruning old checkpoints leaves such a folder alone and does not fail.
"$MYELIN" train "${C[@]}" --steps 6 --checkpoint-dir huge --checkpoint-every 6 --keep-checkpoints 1
[ -d huge/step_99999999999999999999 ] || fail "pruning removed a folder it did not write"
[ -f huge/step_00000006/manifest.txt ] && [ ! -d huge/step_00000004 ] ||
  fail "--keep-checkpoints 1 did not keep exactly the newest: $(ls huge)"

touch plainfile # --checkpoint-dir naming a regular file
expect2 "--checkpoint-dir: plainfile exists and is not a folder" "${R[@]}" plainfile
expect2 "--checkpoint-dir: plainfile exists and is not a folder" \
  train "${C[@]}" --steps 2 --checkpoint-dir plainfile --checkpoint-every 1

# NaN weights in a --model file are bad input, not a learning-rate problem.
cp model.bin nan.bin
poke nan.bin $((1024 + 5 * 4)) '\000\000\300\177' # float 5 of wte: NaN (0x7fc00000)
expect2 "nan.bin: non-finite weight nan in tensor wte (element 5)" \
  train --model nan.bin --train-data 'data/addition_train_*.bin' --seq-len 16 --batch-size 2 \
  --steps 2 --quiet
echo "checkpoint integrity: $n cases exit 2 naming the culprit; --resume-from resumes exactly"
