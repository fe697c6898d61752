#!/usr/bin/env bash
# Builds and runs the GGUF writer comparison reported in docs/gguf-writer.md.
#
#   bench/gguf-writer-compare/run.sh            # 100 x 30 MB F16 tensors, 5 rounds
#   REPS=1 TENSORS=10 bench/gguf-writer-compare/run.sh   # quick smoke run
#
# Env: CARGO_TARGET_DIR (default /work/target-bench), BENCH_TMP (default /work/bench-tmp;
# outputs go to $BENCH_TMP/gguf-writer-compare and the .gguf files are deleted at the end
# unless KEEP=1), REPS (5), TENSORS (100), ROWS (3001), COLS (5003), PY (python with the
# PyPI `gguf` package; default /work/refvenv/bin/python).
#
# Each writer runs as its own process under /usr/bin/time -v, after a `sync`, in rounds of
# (gen, recast, gguf-rs, gguf-rs-lib, cp) whose order rotates by one each round, and the
# table reports the median per row (wall time also min-max: the machine is shared, so wall
# times are noisy; CPU time is the steadier signal). "disk writeback" is the machine-wide
# /proc/vmstat nr_written delta over the run plus a trailing `sync` (pages written to disk;
# other processes' writes would show up too, so it is an upper bound for that run).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
OUT=${BENCH_TMP:-/work/bench-tmp}/gguf-writer-compare
REPS=${REPS:-5}
PY=${PY:-/work/refvenv/bin/python}
export TENSORS=${TENSORS:-100} ROWS=${ROWS:-3001} COLS=${COLS:-5003}

if [ ! -x /usr/bin/time ]; then
    apt-get update && apt-get install -y time
fi

cargo build --release --manifest-path "$HERE/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release/gguf-writer-compare

mkdir -p "$OUT"
rm -f "$OUT"/*.gguf "$OUT"/*.gguf.partial
cleanup() {
    if [ "${KEEP:-0}" != 1 ]; then rm -f "$OUT"/*.gguf "$OUT"/*.gguf.partial; fi
}
trap cleanup EXIT

RES=$OUT/results.tsv
printf 'row\trep\twall_s\tuser_s\tsys_s\tmaxrss_kb\tfs_out_blocks\twchar\twrite_bytes\twriteback_bytes\tsize\n' >"$RES"

# measure ROW REP FILE CMD...: one process under /usr/bin/time -v, one line in $RES.
measure() {
    local row=$1 rep=$2 file=$3
    shift 3
    sync
    local nw0 nw1
    nw0=$(awk '/^nr_written /{print $2}' /proc/vmstat)
    /usr/bin/time -v -o "$OUT/time.log" "$@" >"$OUT/stdout.log" 2>"$OUT/stderr.log" || {
        echo "FAILED: $row" >&2
        cat "$OUT/stderr.log" "$OUT/time.log" >&2
        exit 1
    }
    sync
    nw1=$(awk '/^nr_written /{print $2}' /proc/vmstat)
    local wall usr sys rss fso wchar wb size
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$OUT/time.log")
    usr=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$OUT/time.log")
    sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$OUT/time.log")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/time.log")
    fso=$(awk -F': ' '/File system outputs/ {print $2}' "$OUT/time.log")
    wchar=$(sed -n 's/.*wchar=\([0-9]*\).*/\1/p' "$OUT/stdout.log")
    wb=$(sed -n 's/.*write_bytes=\([0-9]*\).*/\1/p' "$OUT/stdout.log")
    size=0
    [ -n "$file" ] && size=$(stat -c %s "$file")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$rep" "$wall" "$usr" "$sys" "$rss" "$fso" "${wchar:--}" "${wb:--}" "$(((nw1 - nw0) * 4096))" "$size" >>"$RES"
    printf '  %-12s rep %s: %6.2f s wall, %5.2f s user, %5.2f s sys, maxrss %7s KiB  %s\n' "$row" "$rep" "$wall" "$usr" "$sys" "$rss" "$(grep -h 'took\|bytes' "$OUT/stderr.log" | tr '\n' ' ')"
}

echo "== $TENSORS F16 tensors of [$ROWS, $COLS]; $REPS round(s); files in $OUT"
ROWS_ORDER=(gen recast gguf-rs gguf-rs-lib cp)
run_row() {
    local row=$1 rep=$2
    case $row in
    gen) measure gen "$rep" "" "$BIN" gen ;;
    cp)
        # Disk baseline: copy the (page-cached) recast output and fsync the copy.
        rm -f "$OUT/cp.gguf"
        measure cp "$rep" "$OUT/cp.gguf" sh -c 'cp "$0" "$1" && sync "$1"' "$OUT/recast.gguf" "$OUT/cp.gguf"
        ;;
    *)
        rm -f "$OUT/$row.gguf"
        measure "$row" "$rep" "$OUT/$row.gguf" "$BIN" "$row" "$OUT/$row.gguf"
        ;;
    esac
}
for rep in $(seq 1 "$REPS"); do
    # Rotate the order each round (round 1 keeps recast before cp, which copies its output).
    n=${#ROWS_ORDER[@]}
    for k in $(seq 0 $((n - 1))); do
        run_row "${ROWS_ORDER[$(((k + rep - 1) % n))]}" "$rep"
    done
done

echo "== verify (gguf.GGUFReader + ggml layout rules + tensor bytes)"
"$PY" "$HERE/verify.py" "$OUT/recast.gguf" "$OUT/gguf-rs.gguf" "$OUT/gguf-rs-lib.gguf" | tee "$OUT/verify.txt" ||
    echo "(verify.py exit $?: see PROBLEMS above)" | tee -a "$OUT/verify.txt"
for f in gguf-rs gguf-rs-lib cp; do
    if cmp -s "$OUT/recast.gguf" "$OUT/$f.gguf"; then r="byte-identical"; else r="differs: $(cmp "$OUT/recast.gguf" "$OUT/$f.gguf" 2>&1 | head -1 || true)"; fi
    echo "whole file recast.gguf vs $f.gguf: $r" | tee -a "$OUT/verify.txt"
done

echo "== small-tensor type probe"
mkdir -p "$OUT/types"
"$BIN" types "$OUT/types" | tee "$OUT/types.tsv"
"$PY" "$HERE/verify.py" --probe "$OUT"/types/*.gguf | tee "$OUT/types-verify.txt"
rm -rf "$OUT/types"

echo "== summary ($REPS round(s); peak RSS is the max over rounds)"
python3 - "$RES" <<'EOF' | tee "$OUT/table.md"
import csv, statistics, sys
rows = {}
for r in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    rows.setdefault(r["row"], []).append(r)
print("| writer | wall time, s: median (min-max) | throughput, MB/s (median) | CPU user+sys, s (median) | peak RSS, MiB | bytes through write(2), GB | disk writeback, GB | file size, B |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
order = ["gen", "recast", "gguf-rs", "gguf-rs-lib", "cp"]
for name in sorted(rows, key=lambda n: order.index(n) if n in order else 99):
    rs = rows[name]
    walls = [float(r["wall_s"]) for r in rs]
    wall = statistics.median(walls)
    cpu = statistics.median(float(r["user_s"]) + float(r["sys_s"]) for r in rs)
    rss = max(int(r["maxrss_kb"]) for r in rs) / 1024
    size = int(rs[-1]["size"])
    mbs = f"{size / 1e6 / wall:.0f}" if size else "-"
    wc = [int(r["wchar"]) for r in rs if r["wchar"] != "-"]
    wb = f"{statistics.median(int(r['writeback_bytes']) for r in rs) / 1e9:.2f}" if size else "-"
    wc = f"{statistics.median(wc) / 1e9:.2f}" if wc and size else "-"
    print(f"| {name} | {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {mbs} | {cpu:.2f} | {rss:.0f} | {wc} | {wb} | {size or '-'} |")
EOF
