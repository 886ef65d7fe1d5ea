"""Rule files: which changes to notify about, how loud, where to, and with what text.

Load once with :func:`load_rules` (the daemon and ``runwatch check`` share it), then call
:meth:`RuleSet.match` for every change. The reference users read is ``rules/README.md``.

Errors: :func:`load_rules` raises :class:`~runwatch.yamlfile.FileProblems` (``.problems`` is a list of
:class:`~runwatch.yamlfile.Problem`, one per issue, across every file; ``str()`` of each reads
``file:line: field: message``). Nothing else is raised for a bad rule file, and ``match()`` never raises:
a template that fails to render falls back to the default text and says so in the body.

May import: the basics and ``sources`` (the provider names a rule may match). The pipeline and the
commands import it.
"""

from runwatch.rules.loader import load_rules
from runwatch.rules.ruleset import Decision, Rule, RuleSet
from runwatch.rules.schema import rule_file_json_schema
from runwatch.rules.templates import TEMPLATE_VARIABLES, default_body, default_title
from runwatch.yamlfile import FileProblems, Problem

__all__ = [
    "TEMPLATE_VARIABLES",
    "Decision",
    "FileProblems",
    "Problem",
    "Rule",
    "RuleSet",
    "default_body",
    "default_title",
    "load_rules",
    "rule_file_json_schema",
]
