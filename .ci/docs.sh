#!/usr/bin/env bash
# `make docs` (build) and `make docs-lint` (lint): the collection's antsibull-docs site and its lint, with the
# tools of .build/docs-venv (docs/requirements-docs.txt). The Makefile puts that venv first in PATH and points
# ANSIBLE_COLLECTIONS_PATH at .build/collections, where this checkout is linked as mcpgateway/mtls.
# Everything it writes goes to .build/docs (and antsibull-docs' temporary copies in $TMPDIR).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=$repo/.build/docs

case "${1:-}" in
lint)
  # --plugin-docs: the schema, markup and generated RST (rstcheck) of every module, filter, test and role
  # argument spec; --check-extra-docs-refs: the references in docs/docsite/rst. References to other collections
  # than this one and ansible.builtin (it has no dependencies) are errors.
  antsibull-docs lint-collection-docs --plugin-docs --no-skip-rstcheck --check-extra-docs-refs \
    --validate-collection-refs dependent --disallow-unknown-collection-refs .
  echo "docs-lint: no findings"
  ;;
build)
  site=$out/site
  rm -rf "$site" "$out/html"
  mkdir -p "$site"
  cat > "$out/index.rst" <<'RST'
.. _docsite_root_index:

mcpgateway.mtls
===============

Mutual TLS, end to end, for the MCP Gateway (ContextForge) and its external plugin servers: PKI, plugin server
and gateway deployment, verification, and rotation. This site documents the collection's modules, filters,
tests, roles (their argument specs) and playbooks.

.. toctree::
   :maxdepth: 2
   :caption: Collections:

   collections/index

.. toctree::
   :maxdepth: 1
   :caption: Plugin indexes:
   :glob:

   collections/index_*

.. toctree::
   :maxdepth: 1
   :caption: Reference indexes:

   collections/environment_variables
RST
  antsibull-docs sphinx-init --use-current --fail-on-error --dest-dir "$site" --index-rst-source "$out/index.rst" \
    --project mcpgateway.mtls --copyright "mcpgateway.mtls developers" --title "mcpgateway.mtls" mcpgateway.mtls

  # No network at build time: intersphinx reads only a local inventory that holds the few docs.ansible.com
  # labels antsibull-docs' pages refer to (a page that refers to another one fails the build: add it here).
  python - "$site/ansible_devel.inv" <<'PY'
import sys
import zlib

labels = [
    ("action_plugins", "plugins/action.html#action-plugins", "Action plugins"),
    ("ansible_configuration_settings", "reference_appendices/config.html#ansible-configuration-settings",
     "Ansible Configuration Settings"),
    ("common_return_values", "reference_appendices/common_return_values.html#common-return-values",
     "Return Values"),
]
body = "".join(f"{name} std:label -1 {uri} {title}\n" for name, uri, title in labels)
with open(sys.argv[1], "wb") as f:
    f.write(b"# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n"
            b"# The remainder of this file is compressed using zlib.\n")
    f.write(zlib.compress(body.encode()))
PY
  cat >> "$site/conf.py" <<PY

# Added by .ci/docs.sh: no network at build time (see there).
intersphinx_mapping = {
    'ansible_devel': ('https://docs.ansible.com/projects/ansible/devel/', '$site/ansible_devel.inv'),
}
PY

  # antsibull-docs' own build script: the RST of the collection, then sphinx-build with warnings as errors (it
  # keeps going: the pages are written all the same, to look at).
  rc=0
  bash "$site/build.sh" || rc=$?
  if [ -d "$site/build/html" ]; then mv "$site/build/html" "$out/html"; fi
  if [ "$rc" -ne 0 ]; then
    echo "docs: the build failed (the warnings above); what it wrote is in $out/html" >&2
    exit "$rc"
  fi
  echo "docs: $(find "$out/html" -name '*.html' | wc -l) HTML pages in $out/html (open index.html)"
  ;;
*)
  echo "usage: $0 build|lint" >&2
  exit 2
  ;;
esac
