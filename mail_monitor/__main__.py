from mail_monitor.cli import entry_point

entry_point()
