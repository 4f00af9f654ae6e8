#!/usr/bin/env bash
# A local Kubernetes control plane built from Kubernetes' own Go modules
# (cluster/build.sh): etcd, kube-apiserver and kube-controller-manager, and on
# request CoreDNS, each a process of this machine listening on loopback only.
# No kubelet, no scheduler, no kube-proxy: the tests' node agent plays the
# kubelet for pods bound to its nodes.
#
#   cluster/cluster.sh up              start what is not running, wait until it is ready
#   cluster/cluster.sh dns             up, and CoreDNS serving cluster.local
#   cluster/cluster.sh down            stop every process up/dns started, and only those
#   cluster/cluster.sh status          what runs, with pids and addresses
#   cluster/cluster.sh kubeconfig USER [GROUP...]
#                                      a client certificate for USER (in GROUPs) and a
#                                      kubeconfig with it; prints the kubeconfig's path
#   cluster/cluster.sh wipe            down, then remove the cluster's directory
#
# Everything lives in one directory, $SIDELB_CLUSTER_DIR (default
# target/cluster): certificates and keys (made once, with openssl), etcd's
# data, logs, pid files and the ports each process was given. `up` when all is
# running and healthy changes nothing; after a crash or a reboot it removes
# stale pid files and starts what is missing, on the same ports when they are
# free and on new ones otherwise. Two runs at once wait for each other (flock).
# While the control plane is up, `env` in that directory says where everything
# is (README, "A real control plane"); `down` removes it.
#
# Settings (environment):
#   SIDELB_CLUSTER_DIR       where the cluster lives (target/cluster)
#   SIDELB_CLUSTER_WAIT      seconds each component is given to become ready (300)
#   SIDELB_CACHE_DIR         where cluster/build.sh keeps the binaries (~/.cache/sidelb)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DIR=${SIDELB_CLUSTER_DIR:-$ROOT/target/cluster}
WAIT=${SIDELB_CLUSTER_WAIT:-300}

ADDRESS=127.0.0.1
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
CLUSTER_DOMAIN=cluster.local
ISSUER=https://kubernetes.default.svc.$CLUSTER_DOMAIN
CONTROLLERS=serviceaccount-token-controller,serviceaccount-controller,namespace-controller
CONTROLLERS=$CONTROLLERS,garbage-collector-controller,root-ca-certificate-publisher-controller
CONTROLLERS=$CONTROLLERS,endpoints-controller,endpointslice-controller,endpointslice-mirroring-controller
CONTROLLERS=$CONTROLLERS,deployment-controller,replicaset-controller,statefulset-controller
CONTROLLERS=$CONTROLLERS,job-controller,disruption-controller,clusterrole-aggregation-controller

PKI=$DIR/pki
RUN=$DIR/run
LOGS=$DIR/logs

say() { echo "cluster: $*" >&2; }
die() {
    say "$*"
    exit 1
}

need() {
    local command package pair
    for pair in "$@"; do
        command=${pair%%:*}
        package=${pair#*:}
        command -v "$command" >/dev/null && continue
        if [ -x "$ROOT/scripts/ensure.sh" ]; then
            "$ROOT/scripts/ensure.sh" apt "$pair"
        else
            die "$command is missing: install the Debian package $package (apt-get install $package)"
        fi
    done
}

case $DIR in
*[[:space:]\'\"\$\\]*) die "SIDELB_CLUSTER_DIR ($DIR) must not contain spaces, quotes, \$ or \\: its paths are written unquoted into env and kubeconfigs" ;;
esac

# ---------------------------------------------------------------- binaries

# Sets KUBERNETES_VERSION/KUBERNETES_BIN (and ETCD_*, COREDNS_*) from
# cluster/build.sh, which builds what the cache lacks.
binaries() {
    local component version bin
    while read -r component version bin; do
        case $component in
        kubernetes) KUBERNETES_VERSION=$version KUBERNETES_BIN=$bin ;;
        etcd) ETCD_VERSION=$version ETCD_BIN=$bin ;;
        coredns) COREDNS_VERSION=$version COREDNS_BIN=$bin ;;
        esac
    done < <("$HERE/build.sh" "$@" || echo "failed")
    for component in "$@"; do
        case $component in
        kubernetes) [ -n "${KUBERNETES_BIN:-}" ] || die "cluster/build.sh kubernetes failed (output above)" ;;
        etcd) [ -n "${ETCD_BIN:-}" ] || die "cluster/build.sh etcd failed (output above)" ;;
        coredns) [ -n "${COREDNS_BIN:-}" ] || die "cluster/build.sh coredns failed (output above)" ;;
        esac
    done
}

# ---------------------------------------------------------------- processes

# The pid of component $1 if it is running and is ours: its command line
# names this cluster's directory, so a pid reused by another process after a
# reboot is never taken for it.
pid_of() {
    local file=$RUN/$1.pid pid
    [ -f "$file" ] || return 1
    pid=$(cat "$file")
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/cmdline" ] || return 1
    grep -q "State:[[:space:]]*Z" "/proc/$pid/status" 2>/dev/null && return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/" || return 1
    echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# Starts component $1 as `$2 ARGS...`, detached from the caller (its own
# session, so `make` returning or a terminal closing does not stop it).
start() {
    local name=$1
    shift
    [ -f "$LOGS/$name.log" ] && mv -f "$LOGS/$name.log" "$LOGS/$name.previous.log"
    setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null 8>&- 9>&- &
    echo $! >"$RUN/$name.pid"
    say "started $name (pid $!), log $LOGS/$name.log"
}

# Sends SIGTERM to component $1, waits up to 30 s, then SIGKILL.
stop() {
    local name=$1 pid i
    if pid=$(pid_of "$name"); then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do
            [ -d "/proc/$pid" ] && ! grep -q "State:[[:space:]]*Z" "/proc/$pid/status" 2>/dev/null || break
            sleep 0.1
        done
        if [ -d "/proc/$pid" ] && ! grep -q "State:[[:space:]]*Z" "/proc/$pid/status" 2>/dev/null; then
            say "$name (pid $pid) did not stop within 30 s of SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped $name (pid $pid)"
    fi
    rm -f "$RUN/$name.pid"
}

fail_with_log() {
    local name=$1 reason=$2
    say "$reason"
    if [ -f "$LOGS/$name.log" ]; then
        say "last lines of $LOGS/$name.log:"
        tail -n 25 "$LOGS/$name.log" >&2
    fi
    exit 1
}

# Waits until `CHECK...` succeeds for component $1, at most $WAIT seconds,
# failing at once if the process exits.
wait_ready() {
    local name=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + WAIT))
    until "$@" >/dev/null 2>&1; do
        running "$name" || fail_with_log "$name" "$name exited before it was ready"
        [ "$(date +%s)" -lt "$deadline" ] ||
            fail_with_log "$name" "$name was not ready ($what) within $WAIT s (SIDELB_CLUSTER_WAIT)"
        sleep 0.5
    done
}

# ---------------------------------------------------------------- ports

# A port that nothing listens on at ADDRESS (python3 binds it to check).
port_is_free() {
    python3 -c 'import socket,sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))' "$ADDRESS" "$1" 2>/dev/null
}

free_port() {
    python3 -c 'import socket,sys
s = socket.socket()
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])' "$ADDRESS"
}

# The port of $1: the one it had before if that is still free, else a new one.
# Sets CHANGED when it is new.
claim_port() {
    local file=$RUN/$1.port port
    if [ -f "$file" ] && port=$(cat "$file") && port_is_free "$port"; then
        echo "$port"
        return
    fi
    port=$(free_port) || die "cannot find a free port on $ADDRESS (python3 is needed to look)"
    echo "$port" >"$file"
    echo "$port"
}

port() { cat "$RUN/$1.port"; }

# ---------------------------------------------------------------- certificates

# Issues $PKI/$1.crt/.key signed by the cluster CA. $2: subject, $3: extended
# key usage (serverAuth or clientAuth), $4: subjectAltName or empty. Kept when
# it exists with the same subject and names.
issue() {
    local name=$1 subject=$2 usage=$3 sans=$4 spec
    spec="$subject|$usage|$sans"
    if [ -f "$PKI/$name.crt" ] && [ -f "$PKI/$name.key" ] && [ "$(cat "$PKI/$name.spec" 2>/dev/null)" = "$spec" ]; then
        return
    fi
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        echo "extendedKeyUsage = $usage"
        [ -z "$sans" ] || echo "subjectAltName = $sans"
    } >"$PKI/$name.ext"
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$PKI/$name.key" \
        -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null || die "openssl could not make a key for $name"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null ||
        die "openssl could not sign the certificate of $name"
    rm -f "$PKI/$name.csr" "$PKI/$name.ext"
    chmod 600 "$PKI/$name.key"
    echo "$spec" >"$PKI/$name.spec"
}

pki() {
    mkdir -p "$PKI"
    if [ ! -f "$PKI/ca.crt" ] || [ ! -f "$PKI/ca.key" ]; then
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 3650 -sha256 \
            -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=sidelb-cluster-ca" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            2>/dev/null || die "openssl could not make the cluster CA"
        chmod 600 "$PKI/ca.key"
        rm -f "$PKI"/*.spec
    fi
    if [ ! -f "$PKI/sa.key" ] || [ ! -f "$PKI/sa.pub" ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null &&
            openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null ||
            die "openssl could not make the service-account signing key"
        chmod 600 "$PKI/sa.key"
    fi
    local names="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    names="$names,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,IP:$ADDRESS,IP:$KUBERNETES_SERVICE_IP"
    issue kube-apiserver "/CN=kube-apiserver" serverAuth "$names"
    issue admin "/O=system:masters/CN=sidelb-admin" clientAuth ""
    issue kube-controller-manager "/CN=system:kube-controller-manager" clientAuth ""
}

# Writes kubeconfig $1 for the client certificate $PKI/$2.crt, everything
# embedded, so the file can be copied anywhere on this machine.
kubeconfig() {
    local file=$1 cert=$2
    cat >"$file.new" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sidelb
  cluster:
    server: https://$ADDRESS:$(port kube-apiserver)
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI/$cert.key")
contexts:
- name: sidelb
  context:
    cluster: sidelb
    user: $cert
current-context: sidelb
EOF
    chmod 600 "$file.new"
    mv "$file.new" "$file"
}

# ---------------------------------------------------------------- checks

etcd_healthy() {
    curl -sf --max-time 5 "http://$ADDRESS:$(port etcd)/health" | grep -q '"health":"true"'
}

# An HTTPS GET of the API server as the admin.
api_get() {
    curl -sf --max-time 10 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "https://$ADDRESS:$(port kube-apiserver)$1"
}

points_at_apiserver() { grep -qx "    server: https://$ADDRESS:$(port kube-apiserver)" "$1"; }

apiserver_ready() { [ "$(api_get /readyz)" = ok ]; }

# kube-controller-manager's own /healthz (its serving certificate is
# self-signed), then the default ServiceAccount its controller makes: pods
# are refused until that exists.
controllers_ready() {
    [ "$(curl -sfk --max-time 5 "https://$ADDRESS:$(port kube-controller-manager)/healthz")" = ok ] &&
        api_get /api/v1/namespaces/default/serviceaccounts/default >/dev/null
}

coredns_ready() { curl -sf --max-time 5 "http://$ADDRESS:$(port coredns-ready)/ready" >/dev/null; }

# ---------------------------------------------------------------- components

start_etcd() {
    local client peer
    client=$(claim_port etcd)
    peer=$(claim_port etcd-peer)
    mkdir -p "$DIR/etcd"
    chmod 700 "$DIR/etcd"
    # fsync off: a throw-away cluster on a shared disk; nothing here must
    # survive the machine crashing.
    start etcd "$ETCD_BIN/etcd" \
        --name=sidelb --data-dir="$DIR/etcd" \
        --listen-client-urls="http://$ADDRESS:$client" --advertise-client-urls="http://$ADDRESS:$client" \
        --listen-peer-urls="http://$ADDRESS:$peer" --initial-advertise-peer-urls="http://$ADDRESS:$peer" \
        --initial-cluster="sidelb=http://$ADDRESS:$peer" --initial-cluster-state=new \
        --unsafe-no-fsync --log-level=warn
}

start_apiserver() {
    local port
    port=$(claim_port kube-apiserver)
    mkdir -p "$DIR/kube-apiserver"
    # The advertised address is loopback, which Endpoints may not hold, so no
    # endpoint reconciler: the `kubernetes` Service has a ClusterIP and no
    # endpoints. --enable-aggregator-routing makes webhooks be called at
    # their Service's endpoints (pod addresses) rather than its ClusterIP,
    # which nothing routes without kube-proxy.
    start kube-apiserver "$KUBERNETES_BIN/kube-apiserver" \
        --bind-address="$ADDRESS" --secure-port="$port" --advertise-address="$ADDRESS" \
        --endpoint-reconciler-type=none \
        --cert-dir="$DIR/kube-apiserver" \
        --tls-cert-file="$PKI/kube-apiserver.crt" --tls-private-key-file="$PKI/kube-apiserver.key" \
        --client-ca-file="$PKI/ca.crt" \
        --etcd-servers="http://$ADDRESS:$(port etcd)" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NamespaceLifecycle,ServiceAccount,NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
        --service-account-issuer="$ISSUER" --api-audiences="$ISSUER" \
        --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
        --enable-aggregator-routing=true \
        --profiling=false
}

start_controller_manager() {
    local port
    port=$(claim_port kube-controller-manager)
    mkdir -p "$DIR/kube-controller-manager"
    kubeconfig "$DIR/kube-controller-manager.kubeconfig" kube-controller-manager
    start kube-controller-manager "$KUBERNETES_BIN/kube-controller-manager" \
        --kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
        --bind-address="$ADDRESS" --secure-port="$port" --cert-dir="$DIR/kube-controller-manager" \
        --controllers="$CONTROLLERS" \
        --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
        --use-service-account-credentials=true \
        --leader-elect=false \
        --profiling=false
}

start_coredns() {
    local port ready
    port=$(claim_port coredns)
    ready=$(claim_port coredns-ready)
    issue coredns "/CN=sidelb:coredns" clientAuth ""
    kubeconfig "$DIR/coredns.kubeconfig" coredns
    # What CoreDNS's kubernetes plugin reads (its documented RBAC).
    "$KUBERNETES_BIN/kubectl" --kubeconfig "$DIR/kubeconfig" apply -f - >/dev/null <<EOF || die "could not grant CoreDNS its read access (kubectl apply failed)"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: sidelb:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: sidelb:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: sidelb:coredns
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: sidelb:coredns
EOF
    # Only the cluster's own names: nothing is forwarded off the machine.
    cat >"$DIR/Corefile" <<EOF
$CLUSTER_DOMAIN:$port in-addr.arpa:$port ip6.arpa:$port {
    bind $ADDRESS
    errors
    ready $ADDRESS:$ready
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $DIR/coredns.kubeconfig sidelb
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loadbalance
}
EOF
    start coredns "$COREDNS_BIN/coredns" -conf "$DIR/Corefile"
}

# ---------------------------------------------------------------- env

# $DIR/env: where everything is, one KEY=VALUE a line, values unquoted
# (shell-sourceable). Written whenever up or dns finishes.
write_env() {
    local dns=""
    running coredns && dns=$ADDRESS:$(port coredns)
    cat >"$DIR/env.new" <<EOF
SIDELB_CLUSTER_DIR=$DIR
SIDELB_CLUSTER_SERVER=https://$ADDRESS:$(port kube-apiserver)
SIDELB_CLUSTER_KUBECONFIG=$DIR/kubeconfig
SIDELB_CLUSTER_CA=$PKI/ca.crt
SIDELB_CLUSTER_CA_KEY=$PKI/ca.key
SIDELB_CLUSTER_ADMIN_CERT=$PKI/admin.crt
SIDELB_CLUSTER_ADMIN_KEY=$PKI/admin.key
SIDELB_CLUSTER_SA_SIGNING_KEY=$PKI/sa.key
SIDELB_CLUSTER_SA_PUBLIC_KEY=$PKI/sa.pub
SIDELB_CLUSTER_SA_ISSUER=$ISSUER
SIDELB_CLUSTER_API_AUDIENCES=$ISSUER
SIDELB_CLUSTER_SERVICE_CIDR=$SERVICE_CIDR
SIDELB_CLUSTER_KUBERNETES_SERVICE_IP=$KUBERNETES_SERVICE_IP
SIDELB_CLUSTER_DOMAIN=$CLUSTER_DOMAIN
SIDELB_CLUSTER_ETCD=http://$ADDRESS:$(port etcd)
SIDELB_CLUSTER_DNS=$dns
SIDELB_CLUSTER_KUBERNETES_VERSION=$KUBERNETES_VERSION
SIDELB_CLUSTER_KUBERNETES_BIN=$KUBERNETES_BIN
SIDELB_CLUSTER_KUBECTL=$KUBERNETES_BIN/kubectl
SIDELB_CLUSTER_ETCD_VERSION=$ETCD_VERSION
SIDELB_CLUSTER_ETCD_BIN=$ETCD_BIN
SIDELB_CLUSTER_COREDNS_VERSION=${COREDNS_VERSION:-}
SIDELB_CLUSTER_COREDNS_BIN=${COREDNS_BIN:-}
SIDELB_CLUSTER_LOGS=$LOGS
EOF
    mv "$DIR/env.new" "$DIR/env"
}

# ---------------------------------------------------------------- commands

up() {
    local began etcd_started=""
    began=$(date +%s)
    binaries kubernetes etcd
    pki
    if ! running etcd; then
        start_etcd
        etcd_started=yes
    fi
    wait_ready etcd "GET /health" etcd_healthy
    # A kube-apiserver pointed at an etcd that moved to another port cannot
    # follow it; one that saw etcd restart on the same port reconnects.
    if running kube-apiserver && [ -n "$etcd_started" ] &&
        ! tr '\0' '\n' <"/proc/$(pid_of kube-apiserver)/cmdline" | grep -qx -- "--etcd-servers=http://$ADDRESS:$(port etcd)"; then
        stop kube-apiserver
    fi
    if ! running kube-apiserver; then
        start_apiserver
    fi
    kubeconfig "$DIR/kubeconfig" admin
    wait_ready kube-apiserver "GET /readyz" apiserver_ready
    # Clients whose kubeconfig names another port follow the API server there.
    if running kube-controller-manager && ! points_at_apiserver "$DIR/kube-controller-manager.kubeconfig"; then
        stop kube-controller-manager
    fi
    running kube-controller-manager || start_controller_manager
    wait_ready kube-controller-manager "GET /healthz, and the default ServiceAccount" controllers_ready
    if running coredns; then
        binaries coredns
        if ! points_at_apiserver "$DIR/coredns.kubeconfig"; then
            stop coredns
            start_coredns
            wait_ready coredns "GET /ready" coredns_ready
        fi
    else
        rm -f "$RUN/coredns.pid"
    fi
    write_env
    say "control plane $KUBERNETES_VERSION ready at https://$ADDRESS:$(port kube-apiserver) in $(($(date +%s) - began)) s"
    say "kubectl --kubeconfig $DIR/kubeconfig get ns     (where everything is: $DIR/env)"
}

dns() {
    up
    binaries coredns
    running coredns || start_coredns
    wait_ready coredns "GET /ready" coredns_ready
    write_env
    say "CoreDNS $COREDNS_VERSION serving $CLUSTER_DOMAIN at $ADDRESS:$(port coredns) (udp and tcp)"
}

down() {
    local name
    for name in coredns kube-controller-manager kube-apiserver etcd; do
        stop "$name"
    done
    rm -f "$DIR/env"
}

status() {
    local name pid
    for name in etcd kube-apiserver kube-controller-manager coredns; do
        if pid=$(pid_of "$name"); then
            echo "$name running, pid $pid, $ADDRESS:$(port "$name")"
        else
            echo "$name not running"
        fi
    done
}

client_kubeconfig() {
    local user=$1 subject="" group
    shift
    case $user in '' | *[!a-zA-Z0-9:._@-]*) die "kubeconfig: a user name of letters, digits and :._@- is needed, got '$user'" ;; esac
    running kube-apiserver || die "kubeconfig: the control plane is not running (cluster/cluster.sh up)"
    for group in "$@"; do
        case $group in '' | *[!a-zA-Z0-9:._@-]*) die "kubeconfig: bad group name '$group'" ;; esac
        subject="$subject/O=$group"
    done
    mkdir -p "$DIR/users"
    issue "user-$user" "$subject/CN=$user" clientAuth ""
    kubeconfig "$DIR/users/$user.kubeconfig" "user-$user"
    echo "$DIR/users/$user.kubeconfig"
}

main() {
    local command=${1:-}
    [ $# -gt 0 ] && shift
    case $command in
    up | dns | down | status | kubeconfig | wipe) ;;
    *) die "usage: cluster/cluster.sh up|dns|down|status|kubeconfig USER [GROUP...]|wipe" ;;
    esac
    case $command in
    down | status | wipe)
        if [ ! -d "$DIR" ]; then
            say "no cluster in $DIR"
            return
        fi
        ;;
    esac
    mkdir -p "$RUN" "$LOGS"
    exec 9>"$DIR/.lock"
    flock 9
    case $command in
    up)
        need curl:curl openssl:openssl python3:python3
        up
        ;;
    dns)
        need curl:curl openssl:openssl python3:python3
        dns
        ;;
    down) down ;;
    status) status ;;
    kubeconfig)
        need openssl:openssl
        client_kubeconfig "$@"
        ;;
    wipe)
        down
        rm -rf "$DIR"
        say "removed $DIR"
        ;;
    esac
}

main "$@"
