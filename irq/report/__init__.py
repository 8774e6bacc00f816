"""What a compile writes for people and tools to read.

- ``build``: report.json, the contract other tools parse (schema in ``irq/schema``);
- ``html``: report.html, one self-contained page;
- ``text``: the one-line and table summaries the CLI and the demo print.
"""
