#!/usr/bin/env bash
# Units per hour of `microscope atlas`: GoogLeNet (ONNX light model, seeded random weights),
# mixed4a (inception_4a/output, 512 units) at 128 px and 512 steps. A unit of an atlas costs an
# eighth of its gallery batch (8 feature visualizations optimized together) and its own unit view
# (every tab: feature visualization, diversity, dataset examples, DeepDream, caricature, weights,
# attributions). The bench runs one shard of one batch and times, from the store, when the gallery
# batch and then each of the first VIEWS unit views are written; `--plan`'s estimates for the same
# work, made in the same run, are printed next to them (the ratios say how far to trust --plan).
#   benches/atlas.sh                 # on the CPU, a release build (what `cargo install` gives)
#   DEVICE=cuda benches/atlas.sh     # on a GPU (builds --features cuda)
#   VIEWS=4 benches/atlas.sh         # time more unit views (default 2)
# Needs the fixtures from tests/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=tests/fixtures/onnx/light-ref/light_inception_v1_random.onnx
LAYER=${LAYER:-inception_4a/output}
STEPS=${STEPS:-512}
SIZE=${SIZE:-128}
BATCH=8
VIEWS=${VIEWS:-2}
DEVICE=${DEVICE:-cpu}
[ -f "$MODEL" ] || { echo "run tests/run.sh first (it builds $MODEL)" >&2; exit 2; }
[ "$VIEWS" -ge 1 ] && [ "$VIEWS" -le "$BATCH" ] || { echo "VIEWS: 1 to $BATCH (one batch's views)" >&2; exit 2; }
features=()
[ "$DEVICE" = cpu ] || features=(--features cuda)
# A dev build is about 1.5× slower here (a unit view: 687 s against 478 s), though its
# dependencies are optimized as in release: they keep debug assertions and overflow checks.
cargo build --release --quiet "${features[@]}" --bin microscope
bin=target/release/microscope
out=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$out"' EXIT
units=$("$bin" info "$MODEL" | awk -v l="$LAYER" '$1 == l {print $0}' | grep -o '\[1, [0-9]*' | cut -d' ' -f2)
shards=$(( (units + BATCH - 1) / BATCH ))   # one batch per shard
settings=("$MODEL" --layers "$LAYER" --steps "$STEPS" --size "$SIZE" --batch "$BATCH"
  --device "$DEVICE" --out "$out/site")
# The layer's line of the plan: name, units, batches, gallery batch "s", unit view "s".
read -r plan_gallery plan_view < <("$bin" atlas "${settings[@]}" --plan \
  | awk -v l="$LAYER" '$1 == l {print $4, $6}')
MICROSCOPE_CACHE="$out/cache" "$bin" atlas "${settings[@]}" --shard "0/$shards" >"$out/log" 2>&1 &
pid=$!
start=$(date +%s.%N)
stamps=()
while :; do
  n=0
  [ -d "$out/site/store" ] && n=$(find "$out/site/store" -type f ! -name '.*' | wc -l)
  while [ "${#stamps[@]}" -lt "$n" ]; do stamps+=("$(date +%s.%N)"); done
  [ "${#stamps[@]}" -ge $((1 + VIEWS)) ] && break
  # Checked after counting: a run that wrote everything and ended is not an early stop.
  kill -0 "$pid" 2>/dev/null || { cat "$out/log" >&2; echo "atlas stopped early" >&2; exit 1; }
  sleep 1
done
awk -v start="$start" -v stamps="${stamps[*]}" -v b="$BATCH" -v u="$units" -v d="$DEVICE" \
  -v l="$LAYER" -v s="$STEPS" -v px="$SIZE" -v pg="$plan_gallery" -v pv="$plan_view" 'BEGIN {
  n = split(stamps, t, " ")
  gallery = t[1] - start
  view = (t[n] - t[1]) / (n - 1)
  per_unit = gallery / b + view
  printf "%s, %s steps at %s px on %s:\n", l, s, px, d
  printf "  gallery batch of %d units: %.0f s (plan %.0f s, measured/planned %.2f)\n", b, gallery, pg, gallery / pg
  printf "  unit view, mean of %d: %.0f s (plan %.0f s, measured/planned %.2f)\n", n - 1, view, pv, view / pv
  printf "  %.1f units/hour; the whole layer (%d units): %.1f h\n", 3600 / per_unit, u, u * per_unit / 3600 }'
