"""The command line: ``parser`` reads the arguments and hands each command to its family's module
(``check``, ``run`` (and ``reload``), ``test_rules``, ``outbox``, ``send_test``, ``silence``, ``init``,
``rehearse`` (``demo``, ``fake``)), imported only when that command runs, so ``runwatch run`` answers
/healthz before the heavy imports. ``warnings`` is what ``check`` adds to its errors, ``stand_ins``
how it checks channels whose secrets only the service can read; ``common`` is what the operator's
commands share, ``journal`` the syslog priority of each line when the output goes to the journal.

Commands call into the packages, never the reverse: nothing imports ``runwatch.commands`` but
``runwatch.__main__`` and the ``runwatch`` script.
"""

from runwatch.commands.parser import main

__all__ = ["main"]
