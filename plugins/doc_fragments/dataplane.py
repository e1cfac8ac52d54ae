# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Options shared by meshops.istio modules that judge a namespace's workloads in either data plane mode."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  dataplane_mode:
    description:
      - C(sidecar) judges sidecar injection; C(ambient) judges enrollment in ambient mode instead. A pod is enrolled
        when istio-cni has redirected it (annotation C(ambient.istio.io/redirection=enabled)) and istiod serves it to
        ztunnel over HBONE. istiod's ambient index (C(/debug/ambientz)) is read once per run, at O(istiod_url) or
        through the API server's service proxy.
    type: str
    choices: [sidecar, ambient]
    default: sidecar
  istiod_url:
    description:
      - With O(dataplane_mode=ambient), where istiod's monitoring port answers from the controller (for example
        C(http://istiod.example:15014)). Empty means through the API server's service proxy to Service
        C(istiod) port 15014 in O(istio_namespace), which needs the C(services/proxy) permission there.
    type: str
    default: ""
  istio_namespace:
    description: With O(dataplane_mode=ambient) and no O(istiod_url), the namespace of Service C(istiod).
    type: str
    default: istio-system
"""
