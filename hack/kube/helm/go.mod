module local.invalid/rc-kube/helm

go 1.26.8
