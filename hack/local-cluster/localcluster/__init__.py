"""The local cluster's code, one module a job; ``hack/local-cluster/cluster.py`` is its command line and names them."""
