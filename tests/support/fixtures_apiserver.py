"""pytest fixtures for a real kube-apiserver + etcd."""
