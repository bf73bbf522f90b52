# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The code that runs on the managed hosts, as one package (built into a wheel on the controller by the
module mcpgateway.mtls.host_package and installed into the service venvs):

- ``launcher``: the cpex external plugin server behind its safety checks (plugin hosts);
- ``probe``: the gateway side's one-shot mTLS probe, its config check and its rotation watcher.
"""

__version__ = "1.0.0"
