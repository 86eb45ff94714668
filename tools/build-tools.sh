#!/usr/bin/env bash
# Builds the pinned external programs (Kubernetes, etcd, KWOK, Prometheus, Traefik, Helm) from
# their Go modules into a git-ignored folder, and copies the data files they need (KWOK stages,
# Gateway API CRDs) out of the Go module cache.
#
# Each program has its own wrapper module under tools/<name>/ so that the dependency graphs
# of Kubernetes, etcd and Prometheus never mix. A build is keyed by the wrapper's go.mod and
# go.sum plus this script: when the key matches, nothing is built. Built binaries are also
# kept under ~/.cache/coalmine/tools/<key>/ so that a fresh clone on the same machine (CI)
# reuses them instead of relinking.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="${COALMINE_TOOLS_DIR:-$root/.tools}"
bin="$out/bin"
share="$out/share"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/coalmine/tools"
mkdir -p "$bin" "$share" "$out/stamps" "$cache"

K8S_VERSION=v1.36.3
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
GATEWAY_API_VERSION=v1.4.0
ARGOCD_VERSION=v3.5.7  # the newest Argo CD whose module Go 1.26 accepts (3.6 needs Go 1.27)

command -v go >/dev/null || { echo "build-tools: the 'go' command is missing (Go >= 1.26 is needed to build the test cluster)" >&2; exit 1; }

k8s_ldflags() {
    local flags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=36 -X $pkg.gitTreeState=clean"
    done
    echo "$flags"
}

# name | programs (output names) | go build arguments
build_k8s() {
    CGO_ENABLED=0 go build -trimpath -tags selinux,notest -ldflags "$(k8s_ldflags)" -o "$1/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}
build_etcd() {
    # The server module's root package is the etcd main; its default binary name would be "v3".
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$1/etcd" go.etcd.io/etcd/server/v3
}
build_kwok() {
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$1/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
}
build_prometheus() {
    # Only Kubernetes service discovery: the other mechanisms pull in every cloud SDK.
    CGO_ENABLED=0 go build -trimpath -tags remove_all_sd,enable_kubernetes_sd -ldflags "-s -w" \
        -o "$1/prometheus" github.com/prometheus/prometheus/cmd/prometheus
}

build_traefik() {
    # v3.6.12: the newest 3.6 release the Go module proxy serves here (3.6.24 is refused).
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$1/traefik" \
        github.com/traefik/traefik/v3/cmd/traefik
}

build_argocd() {
    # Our own harness (tools/argocd/*.go): Argo CD's Lua engine and diff normalisation.
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$1/coalmine-argocd" .
}

build_helm() {
    # Stamped as upstream's Makefile does: the version `helm version` prints, and the Kubernetes
    # version `helm template` and `helm lint` assume (one minor above client-go's major 0).
    local minor flags pkg
    minor="$(go list -f '{{.Version}}' -m k8s.io/client-go | cut -d. -f2)"
    flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
    done
    CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$1/helm" helm.sh/helm/v3/cmd/helm
}

build_metrics-server() {
    # Serves the metrics API (metrics.k8s.io) from KWOK's simulated usage, for the HPA controller.
    CGO_ENABLED=0 go build -trimpath \
        -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=v0.8.0" \
        -o "$1/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server
}

declare -A programs=(
    [k8s]="kube-apiserver kube-controller-manager kube-scheduler kubectl"
    [etcd]="etcd"
    [kwok]="kwok kwokctl"
    [prometheus]="prometheus"
    [traefik]="traefik"
    [argocd]="coalmine-argocd"
    [helm]="helm"
    [metrics-server]="metrics-server"
)

only="${*:-k8s etcd kwok prometheus traefik argocd helm metrics-server}"
for name in $only; do
    module="$here/$name"
    # A wrapper's own Go sources (only the argocd harness has any) are part of the key.
    key="$(cat "$module/go.mod" "$module/go.sum" $(find "$module" -maxdepth 1 -name '*.go' | sort) \
        <(declare -f "build_$name" k8s_ldflags) | sha256sum | cut -c1-16)"
    stamp="$out/stamps/$name"
    missing=0
    for p in ${programs[$name]}; do [[ -x "$bin/$p" ]] || missing=1; done
    if [[ $missing == 0 && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
        echo "tools: $name is up to date ($key)"
        continue
    fi
    if [[ -f "$cache/$name-$key/.complete" ]]; then
        echo "tools: $name restored from $cache/$name-$key"
    else
        echo "tools: building $name ($key); a cold build of all tools takes about 10 minutes on 2 cores"
        start=$(date +%s)
        tmp="$cache/$name-$key.tmp"
        rm -rf "$tmp" && mkdir -p "$tmp"
        (cd "$module" && "build_$name" "$tmp")
        mv "$tmp" "$cache/$name-$key" 2>/dev/null || { rm -rf "$cache/$name-$key"; mv "$tmp" "$cache/$name-$key"; }
        echo "$(( $(date +%s) - start ))" > "$cache/$name-$key/.build-seconds"
        touch "$cache/$name-$key/.complete"
        echo "tools: built $name in $(cat "$cache/$name-$key/.build-seconds") s"
    fi
    for p in ${programs[$name]}; do cp -f "$cache/$name-$key/$p" "$bin/$p"; done
    echo "$key" > "$stamp"
done

# Data files from the module cache: KWOK's stages and metrics, and the Gateway API CRDs.
modcache="$(go env GOMODCACHE)"
kwok_dir="$modcache/sigs.k8s.io/kwok@$KWOK_VERSION"
[[ -d "$kwok_dir" ]] || (cd "$here/kwok" && go mod download sigs.k8s.io/kwok)
mkdir -p "$share/kwok-stages"
cp -f "$kwok_dir"/kustomize/stage/node/fast/node-initialize.yaml \
      "$kwok_dir"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      "$kwok_dir"/kustomize/stage/pod/fast/pod-ready.yaml \
      "$kwok_dir"/kustomize/stage/pod/fast/pod-complete.yaml \
      "$kwok_dir"/kustomize/stage/pod/fast/pod-delete.yaml "$share/kwok-stages/"
chmod u+w "$share/kwok-stages/"*
# The pod runner's pods get their own stage (tools/devenv/kwok/demo-pod-running.yaml, same
# key): keep KWOK's pod-ready off them. The operator image's pods stay off pod-delete too: the
# pod runner deletes each once its container has stopped, as a kubelet does.
runner_key='.spec.containers.[] | select(.image | startswith("coalmine.dev/demo-app") or startswith("coalmine:") or startswith("localhost/coalmine:")) | .name'
container_key='.spec.containers.[] | select(.image | startswith("coalmine:") or startswith("localhost/coalmine:")) | .name'
exclude_from_stage() {
    python3 - "$1" "$2" <<'PY'
import sys
path, key = sys.argv[1], sys.argv[2]
text = open(path).read()
rule = f"    - key: '{key}'\n      operator: 'DoesNotExist'\n"
if key not in text:
    text = text.replace("    matchExpressions:\n", "    matchExpressions:\n" + rule, 1)
open(path, "w").write(text)
PY
}
exclude_from_stage "$share/kwok-stages/pod-ready.yaml" "$runner_key"
exclude_from_stage "$share/kwok-stages/pod-delete.yaml" "$container_key"
cp -f "$here/devenv/kwok/"*.yaml "$share/kwok-stages/"
# Simulated resource usage (from pod annotations) and the kubelet's /metrics/resource, which
# metrics-server scrapes.
mkdir -p "$share/kwok-metrics"
cp -f "$kwok_dir"/kustomize/metrics/usage/usage-from-annotation.yaml \
      "$kwok_dir"/kustomize/metrics/resource/metrics-resource.yaml "$share/kwok-metrics/"
chmod u+w "$share/kwok-metrics/"*

# Argo CD's own resource customizations and their tests, to check the harness against them.
argocd_dir="$modcache/github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION"
[[ -d "$argocd_dir" ]] || go mod download "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION"
rm -rf "$share/argocd-resource-customizations"
cp -r "$argocd_dir/resource_customizations" "$share/argocd-resource-customizations"
chmod -R u+w "$share/argocd-resource-customizations"

gw_dir="$modcache/sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
[[ -d "$gw_dir" ]] || go mod download "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
mkdir -p "$share/gateway-api-crds"
cp -f "$gw_dir"/config/crd/standard/*.yaml "$share/gateway-api-crds/"
chmod u+w "$share/gateway-api-crds/"*
echo "tools: ready in $bin"
