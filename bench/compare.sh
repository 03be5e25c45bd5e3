#!/usr/bin/env bash
# loom against PyTorch on the same work, on this machine, at the same thread counts, in one
# run; prints one table and writes it to bench/RESULTS.md (regenerated on every run: nobody
# edits that file by hand).
#
#   bash bench/compare.sh [--quick] [--build DIR (build/ci)] [--out FILE (bench/RESULTS.md)]
#                         [--no-build (use the bench binaries already in DIR)]
#
# Rows (loom bench | PyTorch peer):
#   MLP step 784-1024-1024-10, B 256, SGD        bench_mlp_step      | mlp_step_torch.py
#   GPT step 4 layers, d 256, T 128, B 8, AdamW,
#     32-true and bf16-mixed                     bench_gpt_step      | gpt_step_torch.py
#   a 1e9-parameter model built normally and
#     with empty_init / on meta: time, peak RSS  bench_init_module   | init_module_torch.py
#   setup cost: Fabric::setup against
#     DistributedDataParallel (world size 1)     bench_fabric_setup  | setup_torch.py
#   DDP step and setup on 2 ranks x 1 thread     bench_ddp           | ddp_step_torch.py
#   all-reduce of 64 MiB, 2 processes            bench_allreduce     | allreduce_torch.py
#   physical references: 1024^3 f32 GEMM against
#     the best BLAS called directly, f32 add
#     against memcpy                             bench_gemm, bench_elementwise | kernels_torch.py
# "loom advantage" is PyTorch's time over loom's (or loom's rate over PyTorch's, PyTorch's
# peak RSS over loom's): above 1, loom is better. Single-process rows run at 1 thread and at
# every core; multi-process rows at 1 thread per rank. PyTorch is Debian's python3-torch run
# as /usr/bin/python3; without it the table keeps loom's columns and says so. --quick runs
# fewer steps and a smaller "big" model: a smoke run, not figures to keep. No GPU row exists
# yet (loom has no CUDA backend); the script says whether a GPU was seen.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="$root/build/ci"
out="$here/RESULTS.md"
quick=0
no_build=0
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --no-build) no_build=1 ;;
    --build) build="$(realpath "$2")"; shift ;;
    --out) out="$(realpath -m "$2")"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

cores="$(nproc)"
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
threads_list="1 $cores"
[[ "$cores" == 1 ]] && threads_list=1
if ((quick)); then
  gpt_steps=(--steps 3 --warmup 1); mlp_steps=15; big=(--layers 2 --width 8192)
  ddp=(--rounds 2 --steps 3 --warmup 2 --setups 3); reps=5; setup_reps=50; min_time=0.1
else
  gpt_steps=(--steps 10 --warmup 2); mlp_steps=60; big=(--layers 15 --width 8192)
  ddp=(--rounds 8 --steps 5 --warmup 5 --setups 9); reps=15; setup_reps=300; min_time=0.5
fi

targets=(bench_mlp_step bench_gpt_step bench_init_module bench_fabric_setup bench_ddp
         bench_allreduce bench_gemm bench_elementwise)
bin="$build/bench"
if ((no_build)); then
  for t in "${targets[@]}"; do
    [[ -x "$bin/$t" ]] || { echo "compare.sh: missing $bin/$t (drop --no-build to build it)" >&2; exit 1; }
  done
else
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    [[ "$build" == "$root/build/ci" ]] || { echo "compare.sh: $build is not a CMake build folder" >&2; exit 1; }
    (cd "$root" && cmake --preset ci >/dev/null)
  fi
  echo "== compare: building ${targets[*]} in $build"
  if ! cmake --build "$build" --target "${targets[@]}" >"$build/compare-build.log" 2>&1; then
    grep -E -m 20 "error|FAILED" "$build/compare-build.log" >&2 || tail -20 "$build/compare-build.log" >&2
    echo "compare.sh: the build failed (full log: $build/compare-build.log)" >&2
    exit 1
  fi
fi

py=/usr/bin/python3
torch_version=""
if "$py" -c 'import torch' 2>/dev/null; then
  torch_version="$("$py" -c 'import torch; print(torch.__version__)')"
else
  echo "compare.sh: PyTorch is not installed for $py (apt-get install python3-torch):" \
       "the table has loom's figures only" >&2
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# run NAME CMD...: runs a bench, its output in $tmp/NAME (echoed in full on failure).
run() {
  local name="$1"; shift
  echo "== compare: $name: $*" | sed "s|$root/||g"
  # (bench_gemm's reporter colours its lines even into a file: the colour codes go)
  if ! "$@" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$tmp/$name"; then
    cat "$tmp/$name" >&2
    echo "compare.sh: $name failed" >&2
    exit 1
  fi
}
torch_run() { [[ -n "$torch_version" ]] && run "$@" || true; }
# field FILE PATTERN N: the Nth field of the first line of FILE matching PATTERN (awk regex),
# empty when FILE or the line is missing.
field() { [[ -f "$1" ]] && awk -v n="$3" "/$2/ { print \$n; exit }" "$1" || true; }

rows=()
# row WHAT THREADS UNIT LOOM TORCH SENSE [REFERENCE_NAME REFERENCE_VALUE]
# SENSE: "time" (lower is better) or "rate" (higher is better).
row() {
  rows+=("$(printf '%s\x1f' "$@")")
}
fmt() { [[ -z "$1" ]] && echo "-" || awk -v v="$1" 'BEGIN { printf (v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : v >= 1 ? "%.2f" : "%.3g"), v }'; }
ratio() {  # ratio A B: A / B with 2 decimals, "-" when either is missing or B is 0
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'
}

# --- MLP step ----------------------------------------------------------------------------
mlp_filter="BM_mlp_step/($(echo "$threads_list" | tr ' ' '|'))/"
run mlp_loom "$bin/bench_mlp_step" --benchmark_filter="$mlp_filter"
torch_run mlp_torch "$py" "$here/mlp_step_torch.py" --threads $threads_list --steps "$mlp_steps"
# The "step ms (med)" column of the closing tables (both right-align values under their header):
# the last number that ends where that header ends.
mlp_ms() {
  awk -v t="$2" -v h="step ms (med)" '$1 == "threads" && index($0, h) { end = index($0, h) + length(h) - 1; next }
    end && $1 == t { n = split(substr($0, 1, end), f, " "); print f[n]; exit }' "$1" 2>/dev/null || true
}
for t in $threads_list; do
  row "MLP step, f32, 784-1024-1024-10, B 256, SGD" "$t" ms "$(mlp_ms "$tmp/mlp_loom" "$t")" \
      "$(mlp_ms "$tmp/mlp_torch" "$t")" time
done

# --- GPT step ----------------------------------------------------------------------------
for precision in 32-true bf16-mixed; do
  for t in $threads_list; do
    run "gpt_loom_${precision}_$t" "$bin/bench_gpt_step" --precision "$precision" --threads "$t" "${gpt_steps[@]}"
    torch_run "gpt_torch_${precision}_$t" "$py" "$here/gpt_step_torch.py" --precision "$precision" --threads "$t" "${gpt_steps[@]}"
    row "GPT step, $precision, 4 layers, d 256, T 128, B 8, AdamW" "$t" ms \
        "$(field "$tmp/gpt_loom_${precision}_$t" '^gpt_step' 6)" \
        "$(field "$tmp/gpt_torch_${precision}_$t" '^gpt_step' 6)" time
  done
done

# --- a 1e9-parameter model ---------------------------------------------------------------
# empty_init / meta at every core, once; the normal build at each thread count, three runs of
# each side alternating (loom, PyTorch, loom, ...), medians: on these VMs a fresh process's
# first touch of 4 GB depends on what the host still backs (docs/design.md "First touch"),
# so one run of each would compare two different memory states.
median() { printf '%s\n' "$@" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
run init_loom env LOOM_NUM_THREADS="$cores" "$bin/bench_init_module" "${big[@]}" --skip_normal 1
torch_run init_torch "$py" "$here/init_module_torch.py" --threads "$cores" "${big[@]}" --skip_normal
params="$(field "$tmp/init_loom" '^init_module empty_init' 8)"
what="$(awk -v p="$params" 'BEGIN { printf "%.3g", p }') parameters (${big[1]} x Linear(${big[3]}, ${big[3]}))"
torch_meta_ms="$(field "$tmp/init_torch" '^meta ' 2)"
row "build $what, empty_init / meta: time" "$cores" us \
    "$(awk -v s="$(field "$tmp/init_loom" '^init_module empty_init' 4)" 'BEGIN { print s * 1e6 }')" \
    "$( [[ -n "$torch_meta_ms" ]] && awk -v s="$torch_meta_ms" 'BEGIN { print s * 1e3 }')" time
row "build $what, empty_init / meta: peak RSS growth" "$cores" MB \
    "$(awk -v b="$(field "$tmp/init_loom" '^init_module empty_init' 6)" 'BEGIN { print b / 1e6 }')" \
    "$( [[ -n "$torch_meta_ms" ]] && awk -v b="$(field "$tmp/init_torch" '^meta ' 5)" 'BEGIN { print b / 1e6 }')" time
for t in $threads_list; do
  loom_s=(); torch_s=(); loom_gb=(); torch_gb=()
  for rep in 1 2 3; do
    run "normal_loom_${t}_$rep" env LOOM_NUM_THREADS="$t" "$bin/bench_init_module" "${big[@]}" --empty_reps 0
    torch_run "normal_torch_${t}_$rep" "$py" "$here/init_module_torch.py" --threads "$t" "${big[@]}" --meta_reps 0
    loom_s+=("$(field "$tmp/normal_loom_${t}_$rep" '^init_module normal' 4)")
    loom_gb+=("$(awk -v b="$(field "$tmp/normal_loom_${t}_$rep" '^init_module normal' 6)" 'BEGIN { print b / 1e9 }')")
    torch_s+=("$(field "$tmp/normal_torch_${t}_$rep" '^cpu \(normal\)' 3)")
    b="$(field "$tmp/normal_torch_${t}_$rep" '^cpu \(normal\)' 6)"
    torch_gb+=("$( [[ -n "$b" ]] && awk -v b="$b" 'BEGIN { print b / 1e9 }')")
  done
  row "build $what, normal init: time (median of 3, alternating)" "$t" s "$(median "${loom_s[@]}")" \
      "$(median "${torch_s[@]}")" time
  row "build $what, normal init: peak RSS growth" "$t" GB "$(median "${loom_gb[@]}")" \
      "$(median "${torch_gb[@]}")" time
done

# --- setup cost --------------------------------------------------------------------------
run setup_loom "$bin/bench_fabric_setup" --skip_big --benchmark_filter='^BM_setup_mlp'
torch_run setup_torch "$py" "$here/setup_torch.py" --reps "$setup_reps"
row "setup of the MLP: Fabric::setup (1 device) / DDP wrap (world size 1, gloo)" 1 us \
    "$(field "$tmp/setup_loom" '^BM_setup_mlp' 2)" "$(field "$tmp/setup_torch" '^setup_mlp' 3)" time

# --- DDP on 2 ranks ----------------------------------------------------------------------
run ddp_loom "$bin/bench_ddp" "${ddp[@]}"
torch_run ddp_torch "$py" "$here/ddp_step_torch.py" "${ddp[@]}"
row "DDP step, MLP 784-1024-1024-10, B 128 per rank, 2 ranks" "2x1" ms \
    "$(field "$tmp/ddp_loom" '^mlp +ddp' 3)" "$(field "$tmp/ddp_torch" '^mlp +ddp' 3)" time
row "DDP step, 100 x Linear(128, 128), B 128 per rank, 2 ranks" "2x1" ms \
    "$(field "$tmp/ddp_loom" '^deep +ddp' 3)" "$(field "$tmp/ddp_torch" '^deep +ddp' 3)" time
row "setup of the MLP under DDP, 2 ranks (parameter broadcast)" "2x1" ms \
    "$(field "$tmp/ddp_loom" '^setup' 3)" "$(field "$tmp/ddp_torch" '^setup' 3)" time

# --- all-reduce --------------------------------------------------------------------------
run allreduce_loom "$bin/bench_allreduce"
torch_run allreduce_torch "$py" "$here/allreduce_torch.py" --reps "$reps"
torch_ar_ms="$(awk -v u="$(field "$tmp/allreduce_torch" '^all_reduce' 5)" 'BEGIN { if (u != "") print u / 1e3 }')"
ar_ms() { awk -v u="$(field "$tmp/allreduce_loom" "^64 MiB +$1 " "$2")" 'BEGIN { if (u != "") print u / 1e3 }'; }
row "all-reduce 64 MiB f32, 2 processes: loom's default (shared memory) / gloo" "2x1" ms \
    "$(ar_ms "ProcessGroup shm" 5)" "$torch_ar_ms" time "Gloo called directly" "$(ar_ms "gloo direct" 5)"
row "all-reduce 64 MiB f32, 2 processes: loom over Gloo TCP / gloo" "2x1" ms \
    "$(ar_ms "ProcessGroup tcp" 5)" "$torch_ar_ms" time "Gloo called directly" "$(ar_ms "gloo direct" 5)"

# --- physical references -----------------------------------------------------------------
run gemm_loom "$bin/bench_gemm" --benchmark_filter='^BM_(cblas_sgemm|onednn_sgemm|matmul/f32)/' \
    --benchmark_min_time="$min_time"
run elementwise_loom "$bin/bench_elementwise" --benchmark_filter='^BM_(memcpy|add_f32_kernel)/' \
    --benchmark_min_time="$min_time"
gbps() { awk -v n="$2" '$1 == n { for (i = 2; i <= NF; ++i) if ($i ~ /^GB\/s=/) { sub(/^GB\/s=/, "", $i); sub(/\/s$/, "", $i); print $i; exit } }' "$1"; }
gemm_rows=() add_rows=()
for t in $threads_list; do
  torch_run "kernels_torch_$t" "$py" "$here/kernels_torch.py" --threads "$t" --reps "$reps"
  # bench_gemm's closing line: "ratio f32  1024^3 T thread(s) (...): loom R GFLOP/s = Qx the best
  # library rate, NAME (...)"; the reference is R / Q.
  line="$(grep -E "^ratio f32 +1024\^3 $t thread" "$tmp/gemm_loom" || true)"
  loom_gflops="$(awk '{ for (i = 1; i < NF; ++i) if ($i == "loom") { print $(i + 1); exit } }' <<<"$line")"
  best="$(awk '{ for (i = 1; i < NF; ++i) if ($i == "=") { q = $(i + 1); sub(/x$/, "", q); print q; exit } }' <<<"$line")"
  best_name="$(sed -E 's/.*best library rate, ([^(]*) \(.*/\1/' <<<"$line")"
  ref="$(awk -v r="$loom_gflops" -v q="$best" 'BEGIN { if (q != "" && q + 0 > 0) print r / q }')"
  row "GEMM 1024^3 f32 (loom matmul / torch.mm)" "$t" GFLOP/s "$loom_gflops" \
      "$(field "$tmp/kernels_torch_$t" '^mm_f32' 5)" rate "best BLAS called directly: ${best_name:-?}" "$ref"
  gemm_rows+=("${rows[-1]}")
  row "add f32, 16 Mi elements, 3 x 64 MiB moved (loom kernel / torch.add out=)" "$t" GB/s \
      "$(gbps "$tmp/elementwise_loom" "BM_add_f32_kernel/$t/real_time")" \
      "$(field "$tmp/kernels_torch_$t" '^add_f32' 5)" rate "memcpy (2 x 64 MiB)" \
      "$(gbps "$tmp/elementwise_loom" "BM_memcpy/$t/real_time")"
  add_rows+=("${rows[-1]}")
done
# The GEMM rows together, then the elementwise ones.
rows=("${rows[@]:0:${#rows[@]}-${#gemm_rows[@]}-${#add_rows[@]}}" "${gemm_rows[@]}" "${add_rows[@]}")

# --- GPU ---------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu_note="GPU present ($(nvidia-smi -L | head -1)), but this loom has no CUDA backend yet: no GPU rows."
else
  gpu_note="No GPU on this machine: GPU rows skipped."
fi

# --- the table ---------------------------------------------------------------------------
table() {
  echo "| what | threads | unit | loom | PyTorch | loom advantage | reference | loom / reference |"
  echo "|---|---|---|---:|---:|---:|---|---:|"
  local r what t unit lv tv sense refname refv adv
  for r in "${rows[@]}"; do
    IFS=$'\x1f' read -r what t unit lv tv sense refname refv <<<"$r"
    if [[ "$sense" == time ]]; then adv="$(ratio "$tv" "$lv")"; else adv="$(ratio "$lv" "$tv")"; fi
    if [[ -n "$refname" ]]; then
      local refratio
      if [[ "$sense" == time ]]; then refratio="$(ratio "$refv" "$lv")"; else refratio="$(ratio "$lv" "$refv")"; fi
      refname="$refname: $(fmt "$refv") $unit"
    else
      refratio=""
    fi
    echo "| $what | $t | $unit | $(fmt "$lv") | $(fmt "$tv") | $adv | $refname | $refratio |"
  done
}

cpu_model="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
flags="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' |
         grep -xE 'avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_bf16|avx512_fp16|avx_vnni|amx_bf16|amx_tile' |
         tr '\n' ' ' | sed 's/ $//')"
capability="$(sed -n 's/^bench_gpt_step: //p' "$tmp/gpt_loom_32-true_$cores" | head -1)"
mem_gb="$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
{
  echo "# loom against PyTorch"
  echo
  echo "<!-- generated by bench/compare.sh; do not edit (run \`bash bench/compare.sh\` to regenerate) -->"
  echo
  ((quick)) && echo "**Quick mode (--quick): a smoke run with few steps and a smaller model, not figures to keep.**" && echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); loom commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- CPU: $cpu_model, $cores cores, ${mem_gb} GiB memory; flags: $flags"
  echo "- loom: $capability"
  echo "- PyTorch: ${torch_version:-not installed (apt-get install python3-torch): its columns are empty}, /usr/bin/python3"
  echo "- Environment: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}; load average (1, 5, 15 min) at the start: $load_start, at the end: $(cut -d' ' -f1-3 /proc/loadavg) (a busy machine skews every figure; the ratios less)"
  echo "- $gpu_note"
  echo
  echo "Loom advantage: PyTorch's time over loom's, loom's rate over PyTorch's, or PyTorch's peak RSS growth over loom's; above 1, loom is better. Threads: per process (2x1: 2 ranks of 1 thread). One-thread GEMM rates are rated by the CPU time of the thread that ran them in all three columns (bench_gemm, kernels_torch.py), so that other processes on a shared machine do not skew them; everything else by wall time. Medians throughout. PyTorch runs with its defaults (OMP_WAIT_POLICY unset, so its OpenMP workers spin while they wait), which costs it most at 2 threads on a busy machine; \`bench/compare_mlp_step.sh\` also times it with OMP_WAIT_POLICY=PASSIVE."
  echo
  table
} >"$out"
echo
sed -n '/^- Date/,$p' "$out"
echo
echo "compare.sh: wrote $out"
