# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The one Kubernetes access layer of meshops.istio, one file per job.

- ``client``: :class:`client.Kube` (connection, discovery), the modules' argument spec and AnsibleModule.
- ``errors``: the layer's exceptions and the messages a client error is turned into.
- ``resource``: reads, writes and dry runs of single objects, and the Istio reads built on them.
- ``apply``: server-side apply through kubernetes.core's service, dry runs side by side.
- ``proxy``: GET through the API server's service proxy.
- ``waiter``: the wait loop and the read-only modules' gather-and-wait.

Import what you use from its submodule; nothing is re-exported here.
"""
