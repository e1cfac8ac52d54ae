# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The names of the labels Istio reads and writes: one home for the modules, module_utils and filters alike.

Plain constants and no imports, so that a filter may import them without loading the Kubernetes client.
"""

from __future__ import annotations

# On a namespace: istio-injection=enabled injects from the default revision (disabled turns injection off).
INJECTION_LABEL = "istio-injection"
# On a namespace or pod: the revision (or revision tag) whose injector injects it. On a control plane's objects and
# webhook configurations: the revision they belong to.
REVISION_LABEL = "istio.io/rev"
# On a revision tag's webhook configuration (as istioctl tag and the collection's upgrade write it): the tag's name.
TAG_LABEL = "istio.io/tag"
# On a namespace (or a pod): ambient enrolls it in Istio's sidecar-less data plane; on a pod, none opts it out.
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
# On a pod, set by istio-cni's node agent once the pod's traffic is redirected to the node's ztunnel.
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"
