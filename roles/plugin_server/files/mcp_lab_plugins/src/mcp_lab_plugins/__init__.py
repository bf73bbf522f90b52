"""Example cpex plugins for the mcpgateway.mtls lab."""

from mcp_lab_plugins.word_filter import WordFilterPlugin

__all__ = ["WordFilterPlugin"]
__version__ = "0.1.0"
