#!/bin/bash
# vecnet TCP throughput: client pod -> Service VIP -> iperf3 server in the host-stand-in netns.
# Usage (root): cargo build --release --workspace && T=5 scripts/bench-tcp.sh
set -u
B="$(cd "$(dirname "$0")/.." && pwd)/target/release"
D=/tmp/vn-tput; rm -rf $D; mkdir -p $D/m
H=vn-tput-host; C=vn-tput-client
ip netns add $H; ip netns add $C
ip netns exec $H ip link set lo up; ip netns exec $H ip addr add 10.20.0.2/32 dev lo
cat > $D/m/svc.yaml <<Y
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: perf, namespace: default}, spec: {clusterIP: 10.96.0.50, ports: [{name: p, port: 5201, protocol: TCP}]}}
- {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: perf-1, namespace: default, labels: {kubernetes.io/service-name: perf}}, addressType: IPv4, endpoints: [{addresses: ["10.20.0.2"]}], ports: [{name: p, port: 5201, protocol: TCP}]}
Y
printf 'nodeName: node1\nsocket: %s/s.sock\ndataDir: %s/d\nsource: {kind: manifests, manifests: {dir: %s/m}}\ninterfaces:\n  host: {netns: %s}\n' $D $D $D $H > $D/c.yaml
$B/vecnetd run --config $D/c.yaml 2>$D/log & P=$!
sleep 1.5
echo '{"cniVersion":"1.1.0","name":"vecnet","type":"vecnet-cni","socket":"'$D'/s.sock"}' | CNI_COMMAND=ADD CNI_CONTAINERID=perf1 CNI_NETNS=/run/netns/$C CNI_IFNAME=eth0 $B/vecnet-cni >/dev/null
ip netns exec $H timeout 60 iperf3 -s -1 -B 10.20.0.2 >/dev/null 2>&1 & sleep 0.5
ip netns exec $C ping -c1 -W1 10.20.0.2 >/dev/null
for target in 10.20.0.2 10.96.0.50; do
  ip netns exec $H timeout 60 iperf3 -s -1 -B 10.20.0.2 >/dev/null 2>&1 & sleep 0.5
  echo -n "$target: "; ip netns exec $C iperf3 -c $target -t ${T:-4} -J 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print('%.2f Gb/s' % (d['end']['sum_received']['bits_per_second']/1e9))"
done
kill -TERM $P; wait $P 2>/dev/null
ip netns del $C; ip netns del $H; rm -rf $D
