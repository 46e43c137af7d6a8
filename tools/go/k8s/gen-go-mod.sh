#!/usr/bin/env bash
# Writes go.mod for a wrapper module that builds k8s.io/kubernetes commands at a release:
# requires k8s.io/kubernetes vX.Y.Z and replaces every k8s.io staging module with v0.Y.Z.
set -euo pipefail
v=$1
minor=${v#*.}; minor=${minor%%.*}; patch=${v##*.}
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
  kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet
  metrics mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)
{
  echo "module krs.local/k8s-tools"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes v$v"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	k8s.io/$m => k8s.io/$m v0.$minor.$patch"; done
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy >/dev/null 2>&1 || go mod download k8s.io/kubernetes >/dev/null
