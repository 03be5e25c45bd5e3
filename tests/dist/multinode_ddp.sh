#!/usr/bin/env bash
# Multi-node DDP in CI: two "hosts" as two network namespaces joined by a veth pair, each with
# its own /dev/shm (a private tmpfs), its own host name (mapped to 127.0.1.1 in its /etc/hosts,
# as many distributions do) and 2 ranks started by loomrun. Checks, for a small MLP trained
# with Fabric's ddp (tests/multinode/ddp_trainer.cpp):
#   - the ranks grouped into 2 nodes of 2 and all_reduce ran hierarchically (shared memory in
#     each node, one leader per node over TCP);
#   - every rank ends with the same parameters, and they and the losses equal a 4-rank run on
#     one host bit for bit (docs/design.md "Strategies": the hierarchical fold is the rank-order
#     fold for consecutive ranks per node);
#   - the losses equal one process on the global batch within 1e-6;
#   - with LOOM_SHM=0 (all over TCP) the ranks agree and the losses too, within 1e-6.
# Exits 77 (skipped, with the reason on stdout) where namespaces cannot be made: not root, no
# ip or unshare, no CAP_NET_ADMIN / CAP_SYS_ADMIN. Every launch runs under `timeout`.
#
#   multinode_ddp.sh LOOMRUN TRAINER               the test
#   multinode_ddp.sh LOOMRUN TRAINER --figure ARGS  step time, hierarchical vs LOOM_SHM=0 (all
#                                                   TCP), 2 nodes x 2 ranks; ARGS go to TRAINER
set -u
loomrun=$1
trainer=$2
shift 2
mode=test
if [ "${1:-}" = "--figure" ]; then
  mode=figure
  shift
fi
trainer_args=("$@")
[ "$mode" = test ] && trainer_args=(--steps 20)

skip() {
  echo "SKIPPED: multi-node test: $* (needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN, ip and unshare)"
  exit 77
}
fail() {
  echo "FAILED: $*"
  exit 1
}

[ "$(id -u)" = 0 ] || skip "not root"
command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
command -v unshare >/dev/null || skip "no 'unshare' command (util-linux)"

tag="lm$$"
ns_a="${tag}a"
ns_b="${tag}b"
work=$(mktemp -d)
cleanup() {
  ip netns del "$ns_a" 2>/dev/null
  ip netns del "$ns_b" 2>/dev/null
  rm -rf "/etc/netns/$ns_a" "/etc/netns/$ns_b" "$work"
}
trap cleanup EXIT
ip netns add "$ns_a" 2>/dev/null || skip "cannot create a network namespace"
ip netns add "$ns_b" || fail "second namespace"
ip link add "${tag}va" type veth peer name "${tag}vb" || skip "cannot create a veth pair"
ip link set "${tag}va" netns "$ns_a" && ip link set "${tag}vb" netns "$ns_b" || fail "moving the veth ends"
ip -n "$ns_a" addr add 10.77.0.1/24 dev "${tag}va" && ip -n "$ns_b" addr add 10.77.0.2/24 dev "${tag}vb" ||
  fail "addresses"
for ns in "$ns_a" "$ns_b"; do
  ip -n "$ns" link set lo up && ip -n "$ns" link set "${tag}v${ns: -1}" up || fail "links up in $ns"
  mkdir -p "/etc/netns/$ns"
  printf '127.0.0.1 localhost\n127.0.1.1 node-%s\n' "${ns: -1}" >"/etc/netns/$ns/hosts"
done
ip netns exec "$ns_a" unshare --mount --uts --propagation private \
  sh -c 'mount -t tmpfs -o size=64m loomshm /dev/shm && hostname probe' 2>/dev/null ||
  skip "cannot give a namespace its own /dev/shm and host name (unshare --mount --uts)"

# run_two_nodes OUT [VAR=VALUE...]: loomrun on each node, 2 ranks each, the trainer writing OUT.
run_two_nodes() {
  local out=$1
  shift
  local port=$((20000 + RANDOM % 20000))
  local pids=()
  for node in 0 1; do
    local ns=$ns_a
    [ $node = 1 ] && ns=$ns_b
    ip netns exec "$ns" unshare --mount --uts --propagation private \
      env "$@" LOOM_NUM_THREADS=1 NODE_HOST="node-${ns: -1}" sh -c '
        mount -t tmpfs -o size=256m loomshm /dev/shm && hostname "$NODE_HOST" && exec "$@"' sh \
      timeout 120 "$loomrun" --nproc-per-node 2 --nnodes 2 --node-rank $node \
      --master-addr 10.77.0.1 --master-port $port "$trainer" "$out" "${trainer_args[@]}" \
      >"$out.node$node.log" 2>&1 &
    pids+=($!)
  done
  local status=0
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  if [ $status != 0 ]; then
    cat "$out".node*.log
    fail "the 2-node run $* failed (logs above)"
  fi
}

if [ "$mode" = figure ]; then
  for round in 1 2; do
    run_two_nodes "$work/hier$round"
    run_two_nodes "$work/tcp$round" LOOM_SHM=0
    grep -h "median step" "$work/hier$round.node0.log" "$work/tcp$round.node0.log"
    h=$(sed -n 's/.*median step \([0-9.e+-]*\) ms.*/\1/p' "$work/hier$round.node0.log")
    t=$(sed -n 's/.*median step \([0-9.e+-]*\) ms.*/\1/p' "$work/tcp$round.node0.log")
    awk -v h="$h" -v t="$t" 'BEGIN { printf "round %s: hierarchical %.3f ms, all-TCP %.3f ms, ratio all-TCP / hierarchical %.2f\n", '"$round"', h, t, t / h }'
  done
  exit 0
fi

run_two_nodes "$work/nodes"
for r in 0 1 2 3; do
  grep -q "^transport hierarchical 2 nodes: {0, 1} {2, 3}$" "$work/nodes/rank$r.txt" ||
    fail "rank $r did not run hierarchically: $(head -1 "$work/nodes/rank$r.txt")"
done
LOOM_NUM_THREADS=1 timeout 60 "$loomrun" --nproc-per-node 4 "$trainer" "$work/host" "${trainer_args[@]}" \
  >"$work/host.log" 2>&1 || { cat "$work/host.log"; fail "the single-host 4-rank run failed"; }
grep -q "^transport shared-memory 1 node" "$work/host/rank0.txt" || fail "the single-host run did not use shared memory"
LOOM_NUM_THREADS=1 timeout 60 "$loomrun" --nproc-per-node 1 "$trainer" "$work/one" "${trainer_args[@]}" --batch 32 \
  >"$work/one.log" 2>&1 || { cat "$work/one.log"; fail "the one-process run failed"; }

body() { grep -v '^transport' "$1"; }
for r in 1 2 3; do
  cmp -s <(body "$work/nodes/rank0.txt") <(body "$work/nodes/rank$r.txt") ||
    fail "2 nodes: rank $r's losses or parameters differ from rank 0's"
done
cmp -s <(body "$work/nodes/rank0.txt") <(body "$work/host/rank0.txt") || {
  diff <(body "$work/nodes/rank0.txt") <(body "$work/host/rank0.txt") | head -5
  fail "2 nodes x 2 ranks differ from 4 ranks on one host"
}
paste <(grep '^loss_decimal' "$work/nodes/rank0.txt") <(grep '^loss_decimal' "$work/one/rank0.txt") |
  awk '{ d = $2 - $4; if (d < 0) d = -d; if (d > 1e-6) { print "step " NR ": " $2 " vs " $4; bad = 1 } }
       END { exit bad }' || fail "losses differ from one process on the global batch by more than 1e-6"
# The all-TCP switch across the same two hosts: same data, Gloo's own reduction order, so the
# ranks agree with each other and with one process within 1e-6, not bit for bit with the rest.
run_two_nodes "$work/tcp" LOOM_SHM=0
grep -q "^transport tcp" "$work/tcp/rank0.txt" || fail "LOOM_SHM=0 did not put the 2-node run on TCP"
for r in 1 2 3; do
  cmp -s <(body "$work/tcp/rank0.txt") <(body "$work/tcp/rank$r.txt") ||
    fail "2 nodes, LOOM_SHM=0: rank $r's losses or parameters differ from rank 0's"
done
paste <(grep '^loss_decimal' "$work/tcp/rank0.txt") <(grep '^loss_decimal' "$work/one/rank0.txt") |
  awk '{ d = $2 - $4; if (d < 0) d = -d; if (d > 1e-6) { print "step " NR ": " $2 " vs " $4; bad = 1 } }
       END { exit bad }' || fail "LOOM_SHM=0: losses differ from one process by more than 1e-6"
steps=$(grep -c '^loss ' "$work/nodes/rank0.txt")
echo "PASSED: 2 nodes x 2 ranks (namespaces $ns_a, $ns_b) ran hierarchically and equal 4 ranks on one host bit for bit ($steps steps, losses and parameters); losses within 1e-6 of one process; with LOOM_SHM=0 all over TCP, ranks identical, losses within 1e-6"
grep -h "median step" "$work/nodes.node0.log" "$work/tcp.node0.log" "$work/host.log"
