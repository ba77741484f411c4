"""The exact model tags a built bento serves.

Empty in the source tree: ``leadml serve`` serves the store's latest import of each
model, the champion it has just imported. ``leadml build`` rewrites this file inside
the bento with the tags it records, so a bento always serves its own models, whatever
newer models the store holds later (rolling back to an older bento rolls back the
models too).
"""

PINNED: dict[str, str] = {}
