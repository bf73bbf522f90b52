# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The code that runs on the managed hosts, as one package (built into a wheel on the controller by the
module mcpgateway.mtls.host_package and installed into the service venvs):

- ``launcher``: the cpex external plugin server behind its safety checks (plugin hosts); the checks made
  before cpex is imported are in ``launcher_checks``, the cpex verification and patches in ``launcher_patches``;
- ``probe``: the gateway side's command line: the one-shot mTLS probe, its config check (``configcheck``) and
  its rotation watcher (``watch``, with ``watch_stats`` and ``watch_targets``); ``common`` holds what they share.
"""

__version__ = "1.0.0"
