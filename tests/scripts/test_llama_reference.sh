#!/usr/bin/env bash
# Exactness of the Llama family against an independent float64 NumPy
# implementation (tests/reference/llama_numpy.py: LlamaForCausalLM's
# mathematics, hand-written backward checked against finite differences,
# AdamW): Myelin's CPU trainer (fp32) and the reference train the same random
# model (GQA with 2 kv heads for 4 heads, untied head, RoPE with Llama 3
# scaling whose wavelengths fall in all three bands, SwiGLU, RMSNorm, padded
# vocabulary) from Myelin's Llama model file on the same llm.c token shard;
# their losses over 10 AdamW steps must agree to 1e-5 relative, their final
# parameters to 1e-5 of the largest parameter, and the padding rows must not
# move.
#
# usage: bash test_llama_reference.sh <path-to-myelin> <work-dir>
# exit: 0 pass, 1 fail, 77 skipped (no NumPy for /usr/bin/python3)
source "$(dirname "${BASH_SOURCE[0]}")/reference_common.sh" llama_numpy.py "$@"

"$PY" "$REF" make --model init.bin --shard train.bin --seed 7

echo "== reference backward against finite differences"
"$PY" "$REF" gradcheck --model init.bin --train-data train.bin

reference_case accum 2 8 2 10   # gradient accumulation; the loader wraps
reference_case full 1 16 1 10   # seq-len = maxT: every rotary position used

if [[ $status -eq 0 ]]; then echo "llama reference: PASS"; else echo "llama reference: FAIL"; fi
exit $status
