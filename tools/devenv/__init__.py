"""The local development environment: a real Kubernetes cluster without Docker.

It runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK (built from pinned
Go modules by ``tools/build-tools.sh``), Prometheus, and a stand-in runtime for the demo app, all
inside a network namespace where 10.244.0.0/16 is local, so that pod IPs are real addresses.
It is test and demo tooling, never part of the operator package.
"""
