# -*- coding: utf-8 -*-
# Copyright: mcpgateway.mtls contributors
# SPDX-License-Identifier: Apache-2.0
"""The config check, ``mcp_mtls_host.probe --check-config``: load the deployed gateway plugin config with
cpex's own loader (after the PLUGINS_* settings of the env file), connect to nothing.

Every mode of the probe starts with the same loading (load_config); --check-config stops there and prints
ONE JSON line:
  {"config": PATH, "ok": true, "plugins": [the names of the kind: external plugins]}
Exit status 0; usable as the ``validate:`` command of a template task. When the env file or the config
cannot be read, cpex is not importable or rejects the config, the probe prints its usual result line with
"error" instead, and exits with 2.
"""

from __future__ import annotations

import os
import sys

from .common import current_user, emit, load_env_file


def load_config(config_path, env_file=None):
    """(error, config): the config as cpex loads it, or why it cannot be loaded (config is then None)."""
    if env_file:
        try:
            load_env_file(env_file)
        except OSError as exc:
            return "cannot read env file %s as user %s: %s" % (env_file, current_user(), exc.strerror or exc), None
    # cpex treats a missing file as "no plugins": refuse that here.
    if not os.path.isfile(config_path):
        return "config file %s does not exist" % config_path, None
    if not os.access(config_path, os.R_OK):
        return "config file %s is not readable by user %s" % (config_path, current_user()), None
    try:
        from cpex.framework.loader.config import ConfigLoader  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        return "cpex is not importable with %s: %s" % (sys.executable, exc), None
    try:
        config = ConfigLoader.load_config(config_path)
    except Exception as exc:  # pydantic ValidationError names the field
        return "cpex rejected %s: %s" % (config_path, " ".join(str(exc).split())), None
    return None, config


def external_plugins(config):
    """The ``kind: external`` plugins of a loaded config: the gateway's clients of plugin servers."""
    return [p for p in (config.plugins or []) if p.kind == "external"]


def report(config_path, plugins):
    """Print the --check-config line for a config that loaded; its exit status (0)."""
    emit({"config": config_path, "ok": True, "plugins": [p.name for p in plugins]})
    return 0
