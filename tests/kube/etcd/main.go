// etcd for the local test cluster, built from the etcd server module at the version Kubernetes ships with
// (build/dependencies.yaml of the release); tests/kube/build.sh makes its wrapper module.
// This is the whole of etcd's own main.go (the root module go.etcd.io/etcd/v3, whose go.mod replaces its
// siblings by ../ paths, so it cannot be built as a dependency).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
