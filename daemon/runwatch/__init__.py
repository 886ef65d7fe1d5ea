"""runwatch: a daemon that watches Exa Websets and Olostep monitor runs and alerts on what rules select.

Data flows one way: source -> change -> rule match -> decision -> outbox -> channel.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
