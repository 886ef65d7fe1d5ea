"""Every provider runwatch knows, in one place: adding one is its module, its fake and one line here.

Config, the daemon, rules (which provider names are valid), ``check`` and ``runwatch fake`` iterate over
:data:`PROVIDERS`; nothing else names a provider.
"""

from __future__ import annotations

from runwatch.sources.base import ProviderSpec
from runwatch.sources.exa import SPEC as EXA
from runwatch.sources.olostep import SPEC as OLOSTEP

PROVIDERS: dict[str, ProviderSpec] = {spec.name: spec for spec in (EXA, OLOSTEP)}
