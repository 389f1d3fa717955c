#!/bin/bash
# vecnet through real kernels: client pod -> Service VIP (and -> the address directly) -> servers
# in the netns that plays the host network stack. TCP 1 and 4 streams (iperf3), UDP 64-byte
# packets (iperf3 -u -b 0), new connections per second (wrk against nginx, Connection: close).
# Usage (root): cargo build --release --workspace && T=5 scripts/bench-tcp.sh
set -u
B="$(cd "$(dirname "$0")/.." && pwd)/target/release"
T=${T:-5}
D=/tmp/vn-tput; rm -rf $D; mkdir -p $D/m
H=vn-tput-host; C=vn-tput-client
cleanup() {
  [ -n "${P:-}" ] && kill -TERM $P 2>/dev/null && wait $P 2>/dev/null
  [ -f $D/nginx.pid ] && kill "$(cat $D/nginx.pid)" 2>/dev/null
  ip netns del $C 2>/dev/null; ip netns del $H 2>/dev/null; rm -rf $D
}
trap cleanup EXIT
ip netns add $H; ip netns add $C
ip netns exec $H ip link set lo up; ip netns exec $H ip addr add 10.20.0.2/32 dev lo
cat > $D/m/svc.yaml <<Y
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: perf, namespace: default}, spec: {clusterIP: 10.96.0.50, ports: [{name: p, port: 5201, protocol: TCP}, {name: u, port: 5201, protocol: UDP}, {name: h, port: 80, targetPort: 8080, protocol: TCP}]}}
- {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: perf-1, namespace: default, labels: {kubernetes.io/service-name: perf}}, addressType: IPv4, endpoints: [{addresses: ["10.20.0.2"]}], ports: [{name: p, port: 5201, protocol: TCP}, {name: u, port: 5201, protocol: UDP}, {name: h, port: 8080, protocol: TCP}]}
Y
printf 'nodeName: node1\nsocket: %s/s.sock\ndataDir: %s/d\nsource: {kind: manifests, manifests: {dir: %s/m}}\ninterfaces:\n  host: {netns: %s}\n' $D $D $D $H > $D/c.yaml
$B/vecnetd run --config $D/c.yaml 2>$D/log & P=$!
sleep 1.5
echo '{"cniVersion":"1.1.0","name":"vecnet","type":"vecnet-cni","socket":"'$D'/s.sock"}' | CNI_COMMAND=ADD CNI_CONTAINERID=perf1 CNI_NETNS=/run/netns/$C CNI_IFNAME=eth0 $B/vecnet-cni >/dev/null
ip netns exec $C ping -c1 -W1 10.20.0.2 >/dev/null
tcp() { # target streams
  ip netns exec $H timeout 60 iperf3 -s -1 -B 10.20.0.2 >/dev/null 2>&1 & sleep 0.5
  ip netns exec $C iperf3 -c $1 -P $2 -t $T -J 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print('%.2f' % (d['end']['sum_received']['bits_per_second']/1e9))"
}
udp() {
  ip netns exec $H timeout 60 iperf3 -s -1 -B 10.20.0.2 >/dev/null 2>&1 & sleep 0.5
  ip netns exec $C iperf3 -c $1 -u -l 64 -b 0 -t $T -J 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin)['end']['sum']; print('%.0f kpps received, %.1f%% loss' % (d['packets']*(100-d['lost_percent'])/100/d['seconds']/1e3, d['lost_percent']))"
}
cat > $D/nginx.conf <<N
worker_processes 1; pid $D/nginx.pid; error_log $D/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 10.20.0.2:8080; location / { return 200 "ok\n"; } } }
N
ip netns exec $H nginx -c $D/nginx.conf 2>/dev/null
cps() {
  command -v wrk >/dev/null || { echo "wrk not installed"; return; }
  ip netns exec $C wrk -t2 -c32 -d${T}s --latency -H 'Connection: close' http://$1/ 2>/dev/null | awk '/Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print r " conn/s, p50 " p50 ", p99 " p99}'
}
echo "tcp1 direct 10.20.0.2: $(tcp 10.20.0.2 1) Gb/s"
echo "tcp1 vip 10.96.0.50:   $(tcp 10.96.0.50 1) Gb/s"
echo "tcp4 vip 10.96.0.50:   $(tcp 10.96.0.50 4) Gb/s"
echo "udp64 vip:             $(udp 10.96.0.50)"
echo "wrk vip:80:            $(cps 10.96.0.50)"
