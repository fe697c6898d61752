#!/usr/bin/env bash
# HF -> GGUF f16 conversion benchmark (results in bench/convert/README.md).
#
#   bench/convert/run.sh                  # ~4 GB bf16 Llama checkpoint, 3 rounds
#   REPS=1 GEN_ARGS="--layers 2" bench/convert/run.sh   # quick smoke run
#
# Measures, each as its own process under /usr/bin/time -v (wall time, user/sys CPU, max RSS):
#   recast    target/release/recast convert HF -o recast.gguf --dtype f16
#             (recast fsyncs its output before renaming it into place)
#   llama.cpp convert_hf_to_gguf.py HF --outtype f16 --outfile ref.gguf, then `sync ref.gguf`
#             (it does not fsync itself; the sync makes its output as durable as recast's)
#   cp        cp HF/*.safetensors to another directory, then `sync` of the copies
# Before every measured command: the previous output of that row is deleted, `sync` flushes
# other dirty pages, and `cat HF/*.safetensors > /dev/null` warms the page cache, so all three
# start with the input cached. Rounds rotate the row order. Throughput = input bytes (the
# safetensors shard files) / wall seconds. Afterwards: recast's peak RSS is checked against
# 2 x largest tensor + 200 MB, and the two GGUFs are compared tensor by tensor (compare_gguf.py).
#
# Env: BENCH_TMP (default /work/bench-tmp/convert-bench; all big files go there), REPS (3),
# PY (python with numpy, torch, transformers, gguf; default /work/refvenv/bin/python),
# LLCPP (llama.cpp checkout holding convert_hf_to_gguf.py and gguf-py/), GEN_ARGS (extra
# gen_checkpoint.py arguments), KEEP=1 keeps the checkpoint and the outputs (default: the
# multi-GB files are deleted at exit), NO_BUILD=1 uses the existing target/release/recast,
# RECAST=/path/to/recast measures that binary (no build). The binary is copied to
# $BENCH_TMP/recast first, so a concurrent rebuild of target/ can't swap it mid-run.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
B=${BENCH_TMP:-/work/bench-tmp/convert-bench}
REPS=${REPS:-3}
PY=${PY:-/work/refvenv/bin/python}
LLCPP=${LLCPP:-/work/models/llcpp-src/llama_cpp_python-0.3.36/vendor/llama.cpp}
HF=$B/hf
OUT=$B/out
LOG=$B/logs

if [ ! -x /usr/bin/time ]; then
    apt-get update && apt-get install -y time
fi

mkdir -p "$B" "$OUT" "$LOG"
cleanup() {
    if [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$OUT" "$HF"
        echo "deleted $OUT and $HF (KEEP=1 keeps them)"
    fi
}
trap cleanup EXIT

# --- recast binary: build, then snapshot it so a concurrent rebuild can't swap it mid-run.
# RECAST=/path/to/recast measures a prebuilt binary instead (no build).
if [ -n "${RECAST:-}" ]; then
    SRC_BIN=$RECAST
else
    if [ "${NO_BUILD:-0}" != 1 ]; then
        (cd "$ROOT" && cargo build --release)
    fi
    SRC_BIN=$ROOT/target/release/recast
fi
RECAST=$B/recast
[ "$SRC_BIN" -ef "$RECAST" ] || cp -p "$SRC_BIN" "$RECAST"
{
    echo "recast binary: $SRC_BIN (built $(date -r "$SRC_BIN" '+%F %T')); repo $ROOT @ $(git -C "$ROOT" rev-parse --short HEAD), last commit touching convert/src: $(git -C "$ROOT" log -1 --format=%h -- convert/src)$(git -C "$ROOT" diff --quiet HEAD -- convert/src src && echo '' || echo ' + uncommitted changes in convert/src or src/')"
    echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -r)"
    echo "python: $("$PY" -c 'import sys, torch, numpy, safetensors; print(sys.version.split()[0], "torch", torch.__version__, "numpy", numpy.__version__, "safetensors", safetensors.__version__)')"
} | tee "$B/env.txt"

# --- llama.cpp's converter must import its vendored gguf-py, not the installed gguf package.
GGUF_USED=$(cd "$LLCPP" && "$PY" -v convert_hf_to_gguf.py --print-supported-models 2>&1 | grep -o "[^ ']*gguf/__init__.py" | head -1 || true)
echo "llama.cpp converter imports gguf from: $GGUF_USED (vendored gguf-py $(sed -n 's/^version = "\(.*\)"/\1/p' "$LLCPP/gguf-py/pyproject.toml"))" | tee -a "$B/env.txt"
case $GGUF_USED in
"$LLCPP/gguf-py/gguf/__init__.py") ;;
*)
    echo "expected $LLCPP/gguf-py/gguf/__init__.py" >&2
    exit 1
    ;;
esac

# --- checkpoint (deterministic; regenerated if missing or made with other GEN_ARGS).
if [ ! -f "$B/checkpoint.json" ] || [ ! -f "$HF/model.safetensors.index.json" ] ||
    [ "$(cat "$B/gen_args" 2>/dev/null || true)" != "${GEN_ARGS:-}" ]; then
    rm -f "$B/checkpoint.json"
    printf '%s' "${GEN_ARGS:-}" >"$B/gen_args"
    echo "== generating checkpoint in $HF"
    # shellcheck disable=SC2086
    /usr/bin/time -f "gen_checkpoint: %e s wall, max RSS %M KiB" "$PY" "$HERE/gen_checkpoint.py" "$HF" ${GEN_ARGS:-} >"$B/checkpoint.json.tmp"
    mv "$B/checkpoint.json.tmp" "$B/checkpoint.json"
fi
INPUT_BYTES=0
for f in "$HF"/*.safetensors; do INPUT_BYTES=$((INPUT_BYTES + $(stat -c %s "$f"))); done
echo "input: $(ls "$HF"/*.safetensors | wc -l) shards, $INPUT_BYTES bytes" | tee -a "$B/env.txt"

RES=$B/results.tsv
printf 'row\trep\twall_s\tuser_s\tsys_s\tmaxrss_kb\tsync_s\tout_bytes\tload1\n' >"$RES"

# The machine is shared: before each measured command wait (at most IDLE_WAIT s, default 180)
# for the 1-minute load average to drop below IDLE_LOAD (default 1.0); the load at the start of
# each command is recorded in results.tsv either way.
wait_idle() {
    local t=0
    while [ "$t" -lt "${IDLE_WAIT:-180}" ] && awk -v m="${IDLE_LOAD:-1.0}" '{exit !($1 >= m)}' /proc/loadavg; do
        sleep 5
        t=$((t + 5))
    done
}

# measure ROW REP OUTPUT CMD...
measure() {
    local row=$1 rep=$2 outfile=$3
    shift 3
    wait_idle
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    sync
    cat "$HF"/*.safetensors >/dev/null
    local tl=$LOG/$row.$rep.time el=$LOG/$row.$rep.stderr
    /usr/bin/time -v -o "$tl" "$@" >"$LOG/$row.$rep.stdout" 2>"$el" || {
        echo "FAILED: $row (rep $rep)" >&2
        tail -n 20 "$el" "$tl" >&2
        exit 1
    }
    local wall usr sys rss syncs size
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tl")
    usr=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$tl")
    sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$tl")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tl")
    # Commands with a trailing sync print "SYNC <start> <end>" (epoch seconds) to stderr.
    syncs=$(awk '/^SYNC / {printf "%.2f", $3-$2}' "$el")
    size=$(du -cb "$outfile" | tail -1 | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$rep" "$wall" "$usr" "$sys" "$rss" "${syncs:--}" "$size" "$load" >>"$RES"
    printf '  %-9s rep %s: %7.2f s wall  %7.2f user  %6.2f sys  maxrss %8s KiB  sync %5s s  (load %s at start)\n' "$row" "$rep" "$wall" "$usr" "$sys" "$rss" "${syncs:--}" "$load"
}

run_row() {
    local row=$1 rep=$2
    case $row in
    recast)
        rm -f "$OUT/recast.gguf"
        measure recast "$rep" "$OUT/recast.gguf" "$RECAST" convert "$HF" -o "$OUT/recast.gguf" --dtype f16
        ;;
    llama.cpp)
        rm -f "$OUT/ref.gguf"
        measure llama.cpp "$rep" "$OUT/ref.gguf" sh -c '
            cd "$1" && "$2" convert_hf_to_gguf.py "$3" --outtype f16 --outfile "$4" || exit 1
            s=$(date +%s.%N); sync "$4"; echo "SYNC $s $(date +%s.%N)" >&2' \
            sh "$LLCPP" "$PY" "$HF" "$OUT/ref.gguf"
        ;;
    cp)
        rm -rf "$OUT/cp"
        mkdir -p "$OUT/cp"
        measure cp "$rep" "$OUT/cp" sh -c '
            d=$1; shift; cp "$@" "$d"/ || exit 1
            s=$(date +%s.%N); sync "$d"/*; echo "SYNC $s $(date +%s.%N)" >&2' \
            sh "$OUT/cp" "$HF"/*.safetensors
        ;;
    esac
}

ORDER=(recast llama.cpp cp)
echo "== $REPS round(s); logs in $LOG"
for rep in $(seq 1 "$REPS"); do
    n=${#ORDER[@]}
    for k in $(seq 0 $((n - 1))); do
        run_row "${ORDER[$(((k + rep - 1) % n))]}" "$rep"
    done
done

echo "== recast.gguf vs llama.cpp's ref.gguf (installed gguf package's GGUFReader)"
# general.basename is llama.cpp's name for the directory ("hf"); recast writes general.name only.
(cd "$B" && "$PY" "$HERE/compare_gguf.py" "$OUT/recast.gguf" "$OUT/ref.gguf" \
    --allow-meta general.name,general.size_label,general.basename) | tee "$B/compare.txt" || true

echo "== summary"
python3 - "$RES" "$B/checkpoint.json" "$INPUT_BYTES" <<'EOF' | tee "$B/table.md"
import csv, json, statistics, sys
res, ck, inb = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3])
rows = {}
for r in csv.DictReader(open(res), delimiter="\t"):
    rows.setdefault(r["row"], []).append(r)
med = lambda xs: statistics.median(xs)
stat = {}
for name, rs in rows.items():
    walls = [float(r["wall_s"]) for r in rs]
    rss = [int(r["maxrss_kb"]) * 1024 / 1e6 for r in rs]
    cpu = [float(r["user_s"]) + float(r["sys_s"]) for r in rs]
    syncs = [float(r["sync_s"]) for r in rs if r["sync_s"] != "-"]
    stat[name] = dict(wall=med(walls), wmin=min(walls), wmax=max(walls), mbs=inb / 1e6 / med(walls),
                      rss=med(rss), rmin=min(rss), rmax=max(rss), cpu=med(cpu), sync=med(syncs) if syncs else None,
                      out=int(rs[-1]["out_bytes"]), n=len(rs), load=max(float(r["load1"]) for r in rs))
r = stat["recast"]
print(f"input: {inb} bytes ({inb/1e9:.2f} GB) of bf16 safetensors; largest tensor "
      f"{ck['largest_tensor']['name']} {ck['largest_tensor']['shape']} = {ck['largest_tensor']['f16_bytes']} bytes as f16\n")
print("| command | wall s, median (min-max) | MB/s (input / median wall) | CPU user+sys s (median) | trailing sync s | peak RSS MB, median (min-max) | recast speed ratio (recast MB/s / this MB/s) | max load1 at start |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name in ["recast", "llama.cpp", "cp"]:
    s = stat[name]
    ratio = r["mbs"] / s["mbs"]
    sy = f"{s['sync']:.2f}" if s["sync"] is not None else "(inside)"
    print(f"| {name} | {s['wall']:.2f} ({s['wmin']:.2f}-{s['wmax']:.2f}) | {s['mbs']:.0f} | {s['cpu']:.2f} | {sy} | "
          f"{s['rss']:.0f} ({s['rmin']:.0f}-{s['rmax']:.0f}) | {ratio:.2f}x | {s['load']:.2f} |")
lim = (2 * ck["largest_tensor"]["f16_bytes"] + 200e6) / 1e6
peak = r["rmax"]
rl, rc = r["mbs"] / stat["llama.cpp"]["mbs"], r["mbs"] / stat["cp"]["mbs"]
# worst case over rounds: slowest recast vs fastest other
rl_w = (inb / r["wmax"]) / (inb / stat["llama.cpp"]["wmin"])
rc_w = (inb / r["wmax"]) / (inb / stat["cp"]["wmin"])
ok = lambda b: "PASS" if b else "FAIL"
print()
print(f"- peak RSS of recast (max over {r['n']} runs) {peak:.0f} MB vs limit 2 x {ck['largest_tensor']['f16_bytes']/1e6:.1f} + 200 = {lim:.1f} MB: {ok(peak <= lim)}")
print(f"- recast / llama.cpp throughput {rl:.1f}x (worst pairing {rl_w:.1f}x), target >= 10x: {ok(rl >= 10)}")
print(f"- recast / cp throughput {rc:.2f}x (worst pairing {rc_w:.2f}x), target >= 0.5x: {ok(rc >= 0.5)}")
print(f"- (context, not a target) CPU seconds: llama.cpp / recast {stat['llama.cpp']['cpu'] / r['cpu']:.2f}x, cp / recast {stat['cp']['cpu'] / r['cpu']:.2f}x")
EOF
echo "- recast.gguf vs llama.cpp's ref.gguf: $(grep '^RESULT' "$B/compare.txt" || echo 'RESULT: compare did not run')" | tee -a "$B/table.md"
