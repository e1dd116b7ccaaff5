// CoreDNS for the local test cluster: the cluster DNS that gives Services their names (the agent reaches the
// metrics aggregator as <instance>-metrics). Built from github.com/coredns/coredns at the version kubeadm of the
// pinned Kubernetes release deploys (tests/kube/build.sh), with only the plugins the cluster's Corefile uses, as
// CoreDNS documents for custom builds: fewer packages to compile than its all-plugins main.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order the plugins run in, as in CoreDNS's own plugin.cfg.
	dnsserver.Directives = []string{"errors", "health", "ready", "kubernetes", "cache"}
}

func main() {
	coremain.Run()
}
