#!/usr/bin/env bash
# Units per hour of `microscope atlas`: GoogLeNet (ONNX light model, seeded random weights),
# mixed4a (inception_4a/output, 512 units) at 128 px and 512 steps. One batch of 8 units (its
# gallery batch and its 8 unit views, every tab) is computed and timed; `--plan`'s estimate for
# the same batch, made in the same run, is printed next to it (the ratio says how far to trust
# --plan), with the hours the whole layer would take.
#   benches/atlas.sh                 # on the CPU
#   DEVICE=cuda benches/atlas.sh     # on a GPU (builds --features cuda)
#   PROFILE=release benches/atlas.sh # a release build (the default, dev, shares the test build:
#                                    # its dependencies, burn included, are optimized the same)
# Needs the fixtures from tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=tests/fixtures/onnx/light-ref/light_inception_v1_random.onnx
LAYER=${LAYER:-inception_4a/output}
STEPS=${STEPS:-512}
SIZE=${SIZE:-128}
BATCH=8
DEVICE=${DEVICE:-cpu}
[ -f "$MODEL" ] || { echo "run tests/run.sh first (it builds $MODEL)" >&2; exit 2; }
features=()
[ "$DEVICE" = cpu ] || features=(--features cuda)
PROFILE=${PROFILE:-dev}
cargo build --profile "$PROFILE" --quiet "${features[@]}" --bin microscope
bin=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/microscope
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
units=$("$bin" info "$MODEL" | awk -v l="$LAYER" '$1 == l {print $0}' | grep -o '\[1, [0-9]*' | cut -d' ' -f2)
shards=$(( (units + BATCH - 1) / BATCH ))   # one batch per shard
settings=("$MODEL" --layers "$LAYER" --steps "$STEPS" --size "$SIZE" --batch "$BATCH"
  --device "$DEVICE" --out "$out/site")
planned=$("$bin" atlas "${settings[@]}" --shard "0/$shards" --plan \
  | awk -v s="0/$shards" '$1 == s {n = split($4, t, ":"); x = 0; for (i = 1; i <= n; i++) x = x * 60 + t[i]; print x}')
start=$(date +%s.%N)
MICROSCOPE_CACHE="$out/cache" "$bin" atlas "${settings[@]}" --shard "0/$shards" >/dev/null 2>&1
took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
awk -v b="$BATCH" -v t="$took" -v p="$planned" -v u="$units" -v d="$DEVICE" -v l="$LAYER" \
  -v s="$STEPS" -v px="$SIZE" 'BEGIN {
  printf "%s, %s steps at %s px on %s: %d units in %.0f s: %.0f units/hour (plan said %.0f s: measured/planned %.2f); the whole layer (%d units): %.1f h\n",
    l, s, px, d, b, t, b / t * 3600, p, t / p, u, u / b * t / 3600 }'
