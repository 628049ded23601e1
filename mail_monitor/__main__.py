import sys

from mail_monitor.cli import main

sys.exit(main())
