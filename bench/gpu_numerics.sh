#!/usr/bin/env bash
# The training step's numerics contract: a new training step against the step it replaces, on learnable
# (structured) tokens. rar_b, batch 64, bf16 autocast, STEPS steps (default 200), the recipe's
# dropout 0.1: loss curves of both steps at two seeds (the seed-to-seed spread is the yardstick:
# a new dropout stream is a new draw of the same distribution), and final weights with dropout
# off (where the two steps should agree to rounding) and on; with FP8=1 (default) also the new step
# with training.fp8 at both seeds (its curves against the bf16 seed-to-seed spread), with current and
# with delayed scaling (training.fp8_scaling).
# Usage (on the GPU machine, after `. scripts/gpu-env.sh`): bench/gpu_numerics.sh OLD_RAR NEW_RAR [steps]
set -u
OLD=$1 NEW=$2 STEPS=${3:-200}
D=${NUMERICS_DIR:-/tmp/rar-numerics}
rm -rf "$D"; mkdir -p "$D"
"$NEW" bench tokens --preset rar_b --structured --count 16384 --out "$D/data.rartok" > /dev/null
C="train --data $D/data.rartok --device cuda --steps $STEPS experiment.log_every=10 experiment.save_every=100000
  experiment.eval_every=100000 experiment.generate_every=100000 lr_scheduler.params.warmup_steps=20
  training.per_gpu_batch_size=64"
run() {  # name binary seed dropout
  "$2" $C --out "$D/$1" training.seed=$3 model.generator.dropout=$4 model.generator.attn_drop=$4 > "$D/$1.log" 2>&1 ||
    { echo "run $1 failed:"; tail -5 "$D/$1.log"; }
}
losses() { grep -o '"loss":[0-9.e+-]*' "$D/$1/metrics.jsonl" | cut -d: -f2 | tr '\n' ' '; }
for s in 42 43; do run old-$s "$OLD" $s 0.1; run new-$s "$NEW" $s 0.1; done
run old-nodrop "$OLD" 42 0; run new-nodrop "$NEW" 42 0
# FP8=1 (the default): the new binary with training.fp8 too, its curve beside the two seeds'
FP8=${FP8:-1}
if [ "$FP8" = 1 ]; then
  C0=$C
  C="$C0 training.fp8=true training.fp8_scaling=current"; for s in 42 43; do run new-fp8-$s "$NEW" $s 0.1; done
  C="$C0 training.fp8=true training.fp8_scaling=delayed"; for s in 42 43; do run new-fp8d-$s "$NEW" $s 0.1; done
  C=$C0
fi
echo "== loss per 10 steps (dropout 0.1)"
for r in old-42 new-42 old-43 new-43 $([ "$FP8" = 1 ] && echo new-fp8-42 new-fp8-43 new-fp8d-42 new-fp8d-43); do
  echo "$r: $(losses $r)"
done
echo "== loss per 10 steps (dropout 0)"
for r in old-nodrop new-nodrop; do echo "$r: $(losses $r)"; done
echo "== final weights, dropout 0: new vs old (seed 42)"
"$NEW" info "$D/new-nodrop/generator.safetensors" --compare "$D/old-nodrop/generator.safetensors" | tail -2
echo "== final weights, dropout 0.1: new vs old (seed 42), and old seed 43 vs old seed 42"
"$NEW" info "$D/new-42/generator.safetensors" --compare "$D/old-42/generator.safetensors" | tail -2
"$NEW" info "$D/old-43/generator.safetensors" --compare "$D/old-42/generator.safetensors" | tail -2
grep -h 'CUDA graph' "$D"/new-42.log | head -1
if [ "$FP8" = 1 ]; then
  echo "== final weights, dropout 0.1, seed 42: fp8 vs bf16 (new step)"
  "$NEW" info "$D/new-fp8-42/generator.safetensors" --compare "$D/new-42/generator.safetensors" | tail -2
  echo "== final weights, dropout 0.1, seed 42: fp8 delayed vs fp8 current"
  "$NEW" info "$D/new-fp8d-42/generator.safetensors" --compare "$D/new-fp8-42/generator.safetensors" | tail -2
fi
