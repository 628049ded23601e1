"""The annotated example configuration that ``mail-monitor init`` writes (generated from the schema)."""

from mail_monitor.config.render import example_config

__all__ = ["example_config"]
