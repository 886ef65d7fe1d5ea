"""Warnings about a config that works but would never alert, which ``runwatch check`` prints.

An error is a config that cannot work (``check`` exits 1, ``run`` does not start). These are configs
that load fine and then do nothing useful, silently: no provider has a key, a key is the README's
placeholder, no rule is loaded. Each would make the daemon run "healthy" while no alert can ever be
sent, which is worse than failing, so ``check`` says so; it is still a warning, because each can be
what the user means (a staging box with no key yet, the fake servers, which take any key).

The checks are conservative: a key is a placeholder only when all of it is one of a few shapes
(``...``, ``<key>``, ``YOUR_API_KEY``, ``changeme``, ``${EXA_API_KEY}``), never because of a part of it.
Messages never include a key's value.

Rule keys that have no effect for their rule (``stuck_after`` on a ``run.status`` rule) are found by
the rule loader (:mod:`runwatch.rules.kinds`) and passed on here, so ``check`` prints them alike.
"""

from __future__ import annotations

import os
import re

from runwatch.config import Config
from runwatch.rules import RuleSet
from runwatch.sources.push import PUSH_SECRETS, push_secrets
from runwatch.sources.registry import PROVIDERS
from runwatch.yamlfile import Problem

#: Whole-key shapes of a placeholder: dots or an ellipsis, ``<...>``, ``${VAR}``/``$VAR``, ``{{ ... }}``,
#: only x's or asterisks.
_PLACEHOLDER_SHAPES = re.compile(
    r"""^(?:
        [.…]+                     # ...  (the README's)
      | <[^<>]*>                  # <key>, <your-api-key>
      | \$\{?[A-Za-z_][A-Za-z0-9_]*\}?   # ${EXA_API_KEY}: YAML does not expand variables
      | \{\{.*\}\}                # {{ exa_api_key }}: an unrendered template
      | [xX*]{3,}                 # xxxx, ****
    )$""",
    re.VERBOSE,
)

#: Whole-key words (lower case, with ``-``, ``_``, spaces and dots removed).
_PLACEHOLDER_WORDS = frozenset(
    {
        "changeme",
        "replaceme",
        "fixme",
        "todo",
        "tbd",
        "placeholder",
        "none",
        "null",
        "apikey",
        "apikeyhere",
        "keyhere",
        "yourkey",
        "yourkeyhere",
        "yourapikey",
        "yourapikeyhere",
        "insertkeyhere",
        "insertapikeyhere",
        "insertyourkeyhere",
        "insertyourapikeyhere",
        "putyourkeyhere",
        "putyourapikeyhere",
        "secret",
        "redacted",
    }
)


def looks_like_placeholder(key: str, provider: str = "") -> bool:
    """True when the whole key is a placeholder (``...``, ``<key>``, ``YOUR_EXA_API_KEY``, ``changeme``)."""
    key = key.strip()
    if _PLACEHOLDER_SHAPES.match(key):
        return True
    word = re.sub(r"[-_ .]", "", key.lower())
    if provider:
        # YOUR_EXA_API_KEY, exa-api-key-here, EXA_KEY: the provider's name in a placeholder word.
        word = word.replace(provider.lower(), "")
    return word in _PLACEHOLDER_WORDS


def _env(name: str) -> str:
    """A non-empty environment variable, compared as pydantic-settings does (case-insensitive)."""
    wanted = name.upper()
    for key, value in os.environ.items():
        if key.upper() == wanted and value.strip():
            return value
    return ""


def _key_warning(config: Config, name: str) -> Problem | None:
    settings = config.provider_settings()[name]
    if settings.api_key is None or not looks_like_placeholder(settings.api_key.get_secret_value(), name):
        return None
    spec = PROVIDERS[name]
    field = f"providers.{name}.api_key"
    what = (
        f"looks like a placeholder, not an API key; {name} will refuse it (401) and nothing is polled there"
    )
    in_file = config.line_of("providers", name, "api_key")
    settings_env = f"RUNWATCH_PROVIDERS__{name.upper()}__API_KEY"
    if _env(settings_env):
        return Problem(config.shown, 0, field, f"the key from ${settings_env} {what}")
    root = config.root if isinstance(config.root, dict) else {}
    block = root.get("providers", {}) if isinstance(root.get("providers"), dict) else {}
    if isinstance(block.get(name), dict) and block[name].get("api_key"):
        return Problem(config.shown, in_file, field, f"the key {what}")
    if _env(spec.key_env):
        return Problem(config.shown, 0, field, f"the key from ${spec.key_env} {what}")
    return Problem(config.shown, 0, field, f"the key from the credential {spec.credential} {what}")


def config_warnings(config: Config, ruleset: RuleSet) -> list[Problem]:
    """What would keep a valid config from ever alerting, one Problem each (empty when all is well)."""
    out: list[Problem] = []
    if not config.enabled_providers():
        where = " or ".join(
            f"{name} (providers.{name}.api_key, ${spec.key_env} or the credential {spec.credential})"
            for name, spec in PROVIDERS.items()
        )
        out.append(
            Problem(
                config.shown,
                config.line_of("providers") if _has_key(config, "providers") else 0,
                "providers",
                f"no provider has an API key, so nothing will be polled; give one to {where}",
            )
        )
    for name in config.enabled_providers():
        if (problem := _key_warning(config, name)) is not None:
            out.append(problem)
    if len(ruleset) == 0:
        field = "rule_files"
        line = config.line_of("rule_files") if _has_key(config, "rule_files") else 0
        files = len(ruleset.files)
        if not config.settings.rule_files:
            why = "rule_files is empty: no rule is loaded"
        elif files:
            why = f"no rule in the {files} rule file{'s' if files > 1 else ''}"
        else:
            why = "no rule file is loaded"
        out.append(Problem(config.shown, line, field, f"{why}, so no change will ever be notified"))
    out.extend(ruleset.warnings)  # keys with no effect for their rule (runwatch.rules.kinds)
    out.extend(_push_warnings(config))
    return out


def _push_warnings(config: Config) -> list[Problem]:
    """Push half set up: a listener no polled provider can push to, or a secret nothing listens for.
    (No provider polled at all is the warning above.)"""
    enabled = config.enabled_providers()
    pushing = [p for p, (key, _, _) in PUSH_SECRETS.items() if p in enabled and push_secrets(enabled[p], key)]
    listen = config.settings.ingest_listen
    if listen is not None and enabled and not pushing:
        what = " or ".join(
            f"providers.{p}.{key} (${env} or the credential {cred})"
            for p, (key, env, cred) in PUSH_SECRETS.items()
        )
        line = config.line_of("ingest_listen") if _has_key(config, "ingest_listen") else 0
        why = f"no provider that is polled has a push secret, so every push is 404; give {what}"
        return [Problem(config.shown, line, "ingest_listen", why)]
    if listen is None:
        return [
            Problem(
                config.shown,
                config.line_of("providers", p, PUSH_SECRETS[p][0]),
                f"providers.{p}.{PUSH_SECRETS[p][0]}",
                "is set but ingest_listen is not: nothing listens for pushes (the runs are still polled)",
            )
            for p in pushing
        ]
    return []


def _has_key(config: Config, key: str) -> bool:
    return isinstance(config.root, dict) and key in config.root
