#!/usr/bin/env bash
# Runs the hostile-input corpus against a built `microscope` binary.
#
# Usage: tests/hostile/run_corpus.sh MICROSCOPE_BIN CORPUS_DIR
#   (make the corpus first: python3 tests/hostile/make_corpus.py CORPUS_DIR)
#
# Why: model files and arrays are untrusted input. Whatever they claim (a 2**40 pad, a 1000x
# resize, dims whose product overflows 64 bits, an .npy header longer than the file), the tool
# must never abort (exit 134), panic with a backtrace, hang, or exhaust memory. It must refuse
# with exit code 2 and ONE clear line on stderr; legal-but-adversarial models must load fast.
#
# Each case in CORPUS_DIR/cases.json runs from inside CORPUS_DIR (its paths are relative to it)
# under `ulimit -v` (4 GB of address space) and `timeout` (10 s), with RUST_BACKTRACE unset.
# `eval` gets `--out` a fresh empty directory; `render` gets `--steps 2 --out DIR/tmp.html`.
# Checks, by the case's "expect":
#   error             exit 2, exactly one non-empty stderr line of at most 4096 bytes (a model
#                     file's long lists and names are shortened in messages), no
#                     "panicked"/"RUST_BACKTRACE", and not "internal error" or "the tensor backend rejected the operation" (a
#                     caught panic: the input was not checked, the runtime or burn tripped over
#                     it; set HOSTILE_ALLOW_INTERNAL=1 to accept those)
#   load_fast         exit 0 within 2 s of CPU time (user and system, as bash's `time` counts
#                     them: wall clock depends on what else the machine runs)
#   distinct_outputs  exit 2 with one stderr line, or exit 0 with two .npy files of different
#                     content (two outputs must not be written to one file name)
#   no_crash          exit 0, or exit 2 with one stderr line (describing a hostile size without
#                     allocating it, or refusing it, are both fine)
# Every case: no panic text on stderr; exit 124/137/134/139 are reported as timeout/killed
# (memory)/abort/segfault.
#
# Prints `ok   NAME` or `FAIL NAME: why` per case, then `N passed, M failed`; runs every case
# and exits 1 if any failed (2 on a usage or manifest error).
#
# Knobs (environment): HOSTILE_VMEM_KB (4000000), HOSTILE_TIMEOUT (10), HOSTILE_FAST_MS (2000),
# HOSTILE_ALLOW_INTERNAL (0), HOSTILE_LINE_MAX (4096), HOSTILE_ONLY (a substring: run only cases
# whose name contains it).

set -u

if [ $# -ne 2 ]; then
    echo "usage: $0 MICROSCOPE_BIN CORPUS_DIR" >&2
    exit 2
fi

bin=$1
corpus=$2
vmem_kb=${HOSTILE_VMEM_KB:-4000000}
limit_s=${HOSTILE_TIMEOUT:-10}
fast_ms=${HOSTILE_FAST_MS:-2000}
allow_internal=${HOSTILE_ALLOW_INTERNAL:-0}
only=${HOSTILE_ONLY:-}
line_max=${HOSTILE_LINE_MAX:-4096}

# Absolute paths: each case runs from inside the corpus directory.
case $bin in
    */*) bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin") ;;
    *) bin=$(command -v "$bin") ;;
esac
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "$0: $1 is not an executable" >&2
    exit 2
fi
corpus=$(cd "$corpus" 2>/dev/null && pwd) || {
    echo "$0: $2 is not a directory" >&2
    exit 2
}
manifest=$corpus/cases.json
if [ ! -f "$manifest" ]; then
    echo "$0: no cases.json in $corpus (run make_corpus.py first)" >&2
    exit 2
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/hostile.XXXXXX")
# What `time` prints for each case (see below): "cpu USER SYSTEM", in seconds.
TIMEFORMAT='cpu %3U %3S'
trap 'rm -rf "$scratch"' EXIT

# The manifest as a NUL-separated stream: name, model, command, expect, argument count, args.
# python3 if present (no new dependency), else jq.
records=$scratch/records
if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, sys
cases = json.load(open(sys.argv[1]))
out = []
for c in cases:
    args = [str(a) for a in c.get("args", [])]
    out += [c["name"], c["model"], c["command"], c["expect"], str(len(args))] + args
sys.stdout.write("".join(s + "\0" for s in out))
' "$manifest" >"$records" || {
        echo "$0: cannot read $manifest" >&2
        exit 2
    }
elif command -v jq >/dev/null 2>&1; then
    jq -j '.[] | .name, "\u0000", .model, "\u0000", .command, "\u0000", .expect, "\u0000",
        ((.args // []) | length | tostring), "\u0000", ((.args // [])[] | tostring, "\u0000")' \
        "$manifest" >"$records" || {
        echo "$0: cannot read $manifest" >&2
        exit 2
    }
else
    echo "$0: needs python3 or jq to read $manifest" >&2
    exit 2
fi

passed=0
failed=0

# The first lines of a file, one line, control characters made visible.
show() {
    head -c 400 "$1" | cat -v | tr '\n' '|' | cut -c1-240
}

# Why a finished run is not acceptable at all (empty when it is): signals, timeouts, panics.
crash_reason() {
    local rc=$1 err=$2
    case $rc in
        124) echo "timed out after ${limit_s}s"; return ;;
        137) echo "killed (exit 137: out of memory, or killed after the timeout)"; return ;;
        134) echo "aborted (exit 134): $(show "$err")"; return ;;
        139) echo "segfault (exit 139)"; return ;;
    esac
    if [ "$rc" -gt 128 ]; then
        echo "killed by signal $((rc - 128))"
        return
    fi
    if grep -q -e 'panicked' -e 'RUST_BACKTRACE' "$err"; then
        echo "panic on stderr: $(show "$err")"
    fi
}

# Empty when stderr is exactly one non-empty line, of a length a person can read, that is not
# a caught panic.
one_line_reason() {
    local err=$1 lines bytes
    lines=$(grep -c '[^[:space:]]' "$err")
    bytes=$(wc -c <"$err")
    if [ "$lines" -ne 1 ]; then
        echo "exit 2 but $lines non-empty stderr lines, want 1: $(show "$err")"
    elif [ "$bytes" -gt "$line_max" ]; then
        echo "exit 2 with one line, but $bytes bytes long (at most $line_max): $(show "$err")"
    elif [ "$allow_internal" != 1 ] && grep -q -e 'internal error' \
        -e 'the tensor backend rejected the operation' "$err"; then
        echo "exit 2 via a caught panic, not a check of the input: $(show "$err")"
    fi
}

while IFS= read -r -d '' name && IFS= read -r -d '' model && IFS= read -r -d '' command &&
    IFS= read -r -d '' expect && IFS= read -r -d '' nargs; do
    args=()
    for ((i = 0; i < nargs; i++)); do
        IFS= read -r -d '' a
        args+=("$a")
    done
    if [ -n "$only" ] && [[ $name != *"$only"* ]]; then
        continue
    fi

    work=$(mktemp -d "$scratch/case.XXXXXX")
    out_dir=
    extra=()
    case $command in
        eval)
            out_dir=$work/out
            mkdir "$out_dir"
            extra=(--out "$out_dir")
            ;;
        render) extra=(--steps 2 --out "$work/tmp.html") ;;
    esac

    # `time` reports the CPU seconds the case used (user, system: the binary's, waited for by
    # `timeout`) on the braces' stderr, with bash's own "Aborted"/"Killed" job reports, which
    # it keeps out of the output.
    # (`time` of a bare subshell is reported by the subshell itself, to its own stderr, and
    # not at all once it execs: hence the inner braces.)
    {
        time {
            (
                cd "$corpus" || exit 99
                ulimit -v "$vmem_kb" || exit 98
                exec env -u RUST_BACKTRACE timeout -k 2 "$limit_s" \
                    "$bin" "$command" "$model" ${args[@]+"${args[@]}"} ${extra[@]+"${extra[@]}"}
            ) </dev/null >"$work/stdout" 2>"$work/stderr"
        }
    } 2>"$work/times"
    rc=$?
    # CPU milliseconds, not wall clock: beside CI's other tests on 2 cores, a case that needs
    # ~0.8 s of CPU took 2.9 s of wall clock, and failed a bound meant for quadratic work.
    # Empty if `time` reported nothing (a harness fault, which fails a timed case).
    ms=$(awk '/^cpu [0-9.]+ [0-9.]+$/ { printf "%d", ($2 + $3) * 1000 }' "$work/times")

    why=$(crash_reason "$rc" "$work/stderr")
    if [ -z "$why" ]; then
        case $expect in
            error)
                if [ "$rc" -ne 2 ]; then
                    why="exit $rc, want 2: $(show "$work/stderr")"
                else
                    why=$(one_line_reason "$work/stderr")
                fi
                ;;
            load_fast)
                if [ "$rc" -ne 0 ]; then
                    why="exit $rc, want 0: $(show "$work/stderr")"
                elif [ -z "$ms" ]; then
                    why="no CPU time reported for the case: $(show "$work/times")"
                elif [ "$ms" -gt "$fast_ms" ]; then
                    why="took ${ms} ms of CPU, want <= ${fast_ms} ms"
                fi
                ;;
            distinct_outputs)
                if [ "$rc" -eq 2 ]; then
                    why=$(one_line_reason "$work/stderr")
                elif [ "$rc" -ne 0 ]; then
                    why="exit $rc, want 0 or 2: $(show "$work/stderr")"
                else
                    files=$(find "$out_dir" -maxdepth 1 -type f -name '*.npy' | wc -l)
                    contents=$(find "$out_dir" -maxdepth 1 -type f -name '*.npy' -exec cksum {} + |
                        cut -d' ' -f1,2 | sort -u | wc -l)
                    if [ "$files" -lt 2 ]; then
                        why="exit 0 but $files .npy file(s) written, want 2"
                        why="$why (one output overwrote the other)"
                    elif [ "$contents" -lt 2 ]; then
                        why="exit 0 but the .npy files written all hold the same data"
                    fi
                fi
                ;;
            no_crash)
                if [ "$rc" -eq 2 ]; then
                    why=$(one_line_reason "$work/stderr")
                elif [ "$rc" -ne 0 ]; then
                    why="exit $rc, want 0 or 2: $(show "$work/stderr")"
                fi
                ;;
            *) why="unknown expect '$expect' in cases.json" ;;
        esac
    fi

    if [ -z "$why" ]; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name: $why"
        failed=$((failed + 1))
    fi
    rm -rf "$work"
done <"$records"

if [ $((passed + failed)) -eq 0 ]; then
    echo "$0: no cases ran" >&2
    echo "0 passed, 0 failed"
    exit 2
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
