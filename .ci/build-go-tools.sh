#!/usr/bin/env bash
# Builds the Go test binaries from the Go module proxy, cached by version:
#   kube-apiserver, kube-controller-manager, kubectl (Kubernetes), etcd, helm.
# Usage: build-go-tools.sh BIN_DIR. Binaries go to BIN_DIR/../go-tools/<name>-<version>, BIN_DIR/<name>
# links to them. Go's module and build caches stay in Go's defaults under $HOME, so a fresh clone
# re-links in seconds. Safe to re-run: nothing is rebuilt that exists.
set -euo pipefail

K8S_VERSION=1.34.4      # k8s.io/kubernetes release (its staging modules are v0.34.4)
ETCD_VERSION=3.6.7
HELM_VERSION=3.19.2

bin_dir=$(mkdir -p "$1" && cd "$1" && pwd)
store="$(dirname "$bin_dir")/go-tools"
mkdir -p "$store"
repo=$(cd "$(dirname "$0")/.." && pwd)
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
command -v go >/dev/null || { echo "go is required (the machine image ships it in /usr/local/go)" >&2; exit 1; }

link() { ln -sfn "$store/$1" "$bin_dir/$2"; }

build() { # name version-file builder...
  local name=$1 file=$2; shift 2
  if [[ -x "$store/$file" ]]; then link "$file" "$name"; return; fi
  local t0=$SECONDS
  echo "building $file ..."
  "$@"
  link "$file" "$name"
  echo "built $file in $((SECONDS - t0)) s"
}

k8s_ldflags() {
  local v=$K8S_VERSION major minor
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  local pkg=k8s.io/component-base/version
  echo "-s -w -X $pkg.gitVersion=v$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor" \
       "-X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z" \
       "-X $pkg/verflag.programName=kubernetes"
}

# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules with local
# paths): the wrapper module in tools/go/k8s requires it and pins every k8s.io staging module.
build_k8s() { # cmd
  local src="$repo/tools/go/k8s"
  # go.mod/go.sum are committed; regenerate them only when K8S_VERSION changes.
  grep -q "k8s.io/kubernetes v$K8S_VERSION\$" "$src/go.mod" 2>/dev/null || (cd "$src" && ./gen-go-mod.sh "$K8S_VERSION")
  (cd "$src" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$store/$1-v$K8S_VERSION" "k8s.io/kubernetes/cmd/$1")
}

build_etcd() {
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && go mod init krs-etcd >/dev/null 2>&1 &&
     go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null 2>&1 &&
     go build -trimpath -ldflags "-s -w" -o "$store/etcd-v$ETCD_VERSION" go.etcd.io/etcd/server/v3)
  rm -rf "$tmp"
}

build_helm() {
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && go mod init krs-helm >/dev/null 2>&1 &&
     go get "helm.sh/helm/v3@v$HELM_VERSION" >/dev/null 2>&1 &&
     go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
       -o "$store/helm-v$HELM_VERSION" helm.sh/helm/v3/cmd/helm)
  rm -rf "$tmp"
}

build etcd "etcd-v$ETCD_VERSION" build_etcd
build kube-apiserver "kube-apiserver-v$K8S_VERSION" build_k8s kube-apiserver
build kube-controller-manager "kube-controller-manager-v$K8S_VERSION" build_k8s kube-controller-manager
build kubectl "kubectl-v$K8S_VERSION" build_k8s kubectl
build helm "helm-v$HELM_VERSION" build_helm
for tool in etcd kube-apiserver kube-controller-manager kubectl helm; do
  [[ -x "$bin_dir/$tool" ]] || { echo "missing $bin_dir/$tool" >&2; exit 1; }
done
echo "go tools ready in $bin_dir"
